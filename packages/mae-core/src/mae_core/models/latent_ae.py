"""A small convolutional VAE that maps images to a latent grid: the frozen first stage of LMD (``latent-ae``).

LMD (AnonymousPony/lmd) encodes images with the Stable Diffusion VAE (``AutoencoderKL``, 8x down, 4 channels) and
uses the posterior mode as the MAE's input and target. Here the library trains its own, smaller KL autoencoder on
the same images first: ``log2(downsample)`` stride-2 stages down, the same up, a diagonal Gaussian posterior with
``2 x latent_channels`` outputs, loss = L1 reconstruction + ``kl_weight`` x KL (the SD first-stage weight 1e-6; no
perceptual or adversarial term). :meth:`LatentAE.latents` gives the posterior mode (the mean), as LMD's
``posterior.mode()``; :meth:`LatentAE.decode_latents` maps latents back to images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import field
from ..contract import PretrainedMixin
from ..errors import ConfigError
from ..masking import uniform_noise
from .mae import ModelOutput


@dataclass
class LatentAEConfig:
    img_size: int = field(32, "input image side in pixels", ge=1)
    in_chans: int = field(3, "number of image channels", ge=1)
    latent_channels: int = field(4, "channels of the latent grid (SD VAE: 4)", ge=1)
    downsample: int = field(4, "image side / latent side, a power of two (SD VAE: 8)", ge=1)
    width: int = field(16, "channels of the first convolution stage (doubled at every downsampling)", ge=1)
    kl_weight: float = field(1e-6, "weight of the KL term (SD first stage: 1e-6)", ge=0)

    def validate(self, where: str = "config") -> None:
        f = self.downsample
        if f & (f - 1):
            raise ConfigError(f"{where}.downsample: must be a power of two, got {f}")
        if self.img_size % f:
            raise ConfigError(f"{where}.downsample: {f} does not divide the image size {self.img_size}")


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU())


def gaussian_noise(shape, generator, device) -> torch.Tensor:
    """Standard normal noise from the trainer's generator (Box-Muller over :func:`uniform_noise`, so a
    ``ShardedGenerator`` works too)."""
    u = uniform_noise((2, *shape), generator, device)
    return torch.sqrt(-2 * torch.log(u[0].clamp_min(1e-12))) * torch.cos(2 * math.pi * u[1])


class LatentAE(PretrainedMixin, nn.Module):
    """Image -> latent grid (B, latent_channels, H / f, W / f) -> image."""

    method_name = "latent-ae"

    def __init__(self, config: LatentAEConfig):
        super().__init__()
        self.config = c = config
        n = int(math.log2(c.downsample))
        widths = [c.width * 2 ** i for i in range(n + 1)]
        down = [nn.Conv2d(c.in_chans, widths[0], 3, padding=1)]
        for i in range(n):
            down += [_stage(widths[i], widths[i]), nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1)]
        down += [_stage(widths[n], widths[n]), nn.Conv2d(widths[n], 2 * c.latent_channels, 1)]
        self.encoder = nn.Sequential(*down)
        up = [nn.Conv2d(c.latent_channels, widths[n], 3, padding=1), _stage(widths[n], widths[n])]
        for i in reversed(range(n)):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(widths[i + 1], widths[i], 3, padding=1),
                   _stage(widths[i], widths[i])]
        up += [nn.Conv2d(widths[0], c.in_chans, 3, padding=1)]
        self.decoder = nn.Sequential(*up)

    @property
    def latent_grid(self) -> tuple[int, int]:
        s = self.config.img_size // self.config.downsample
        return s, s

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log variance) of the diagonal Gaussian posterior, each (B, latent_channels, H / f, W / f)."""
        mean, logvar = self.encoder(images).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior mode (its mean): LMD's ``vae.encode(x).latent_dist.mode()``."""
        return self.posterior(images)[0]

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        x = batch["image"]
        mean, logvar = self.posterior(x)
        z = mean + torch.exp(0.5 * logvar) * gaussian_noise(mean.shape, generator, mean.device)
        recon = self.decoder(z)
        rec = F.l1_loss(recon, x)
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1.0 - logvar).sum((1, 2, 3)).mean()
        loss = rec + self.config.kl_weight * kl
        return ModelOutput(loss=loss, pred=recon, target=x, metrics={"l1": float(rec.detach()), "kl": float(kl.detach())})

    # ---- the model contract: features for probes are the flattened latent grid ---------------------------------------
    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        return self.latents(batch["image"]).flatten(1)

    def feature_dim(self, pool: str | None = None) -> int:
        h, w = self.latent_grid
        return self.config.latent_channels * h * w

    def num_layers(self) -> int:
        return 2

    def layer_id(self, name: str) -> int:
        return 0 if name.startswith("encoder") else 1
