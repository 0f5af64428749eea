"""LMD: latent masking (Ma et al., "LMD: Faster Image Reconstruction with Latent Masking Diffusion"; reference code
AnonymousPony/lmd, ``lmd.py`` and ``engine_pretrain.py``).

An MAE over the latent grid of a frozen image autoencoder: images go through the autoencoder's encoder (posterior
mode), the latent grid is cut into small patches, and the MAE predicts the masked latent patches (MSE, per-patch
normalised targets as the reference's ``--norm_pix_loss``). The mask ratio follows LMD's cosine schedule by default
(``train.mask_schedule``: 0.15 -> 0.75 over the first two thirds of training, then 0.75). The reconstruction
picture decodes the predicted latents with the frozen decoder.

The frozen autoencoder is a ``latent-ae`` run (:mod:`mae_core.models.latent_ae`) held as a
:class:`~mae_core.teacher.FrozenTeacher`: eval, no gradients, outside the MAE's ``state_dict()`` and checkpoints,
recorded by path and sha256 (``autoencoder``, ``autoencoder_sha256``). Without ``--autoencoder`` the first run
trains the default one on the same data and caches it (:func:`mae_core.teacher.cached_pretrain`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import WEIGHTS, read_config
from ..config import field
from ..errors import ConfigError, MaeError
from ..layers import patchify, unpatchify
from ..losses import normalize_patches
from ..teacher import FrozenTeacher, cached_pretrain
from .image_mae import ImageMAE, ImageMAEConfig
from .latent_ae import LatentAE, LatentAEConfig


@dataclass
class LMDConfig(ImageMAEConfig):
    patch_size: int = field(2, "latent patch side (LMD: 4 on the 28 x 28 latent of a 224 px image)")
    norm_pix_loss: bool = field(True, "normalise each target latent patch by its mean and variance (LMD: on)")
    autoencoder: str = field("", "the frozen latent autoencoder: a latent-ae run or save_pretrained directory; "
                                 "empty: the default one for the data (trained once, cached under runs/teachers); "
                                 "'random': random weights (a control)")
    autoencoder_sha256: str = field("", "sha256 of the autoencoder's weights (filled when it is first loaded)")
    latent_channels: int = field(4, "latent channels (copied from the autoencoder's config)", ge=1)
    latent_downsample: int = field(4, "image side / latent side (copied from the autoencoder's config)", ge=1)
    ae_width: int = field(16, "first-stage width of the default / random autoencoder", ge=1)
    ae_epochs: int = field(10, "epochs of the default autoencoder when it has to be trained", ge=1)

    def validate(self, where: str = "config") -> None:
        super().validate(where)
        side = self.img_size // self.latent_downsample
        if self.img_size % self.latent_downsample or side % self.patch_size:
            raise ConfigError(f"{where}.patch_size: the {self.img_size} px image gives a {side} x {side} latent grid "
                              f"(downsample {self.latent_downsample}), which patch size {self.patch_size} must divide")


def ae_config(c: LMDConfig) -> LatentAEConfig:
    return LatentAEConfig(img_size=c.img_size, in_chans=c.in_chans, latent_channels=c.latent_channels,
                          downsample=c.latent_downsample, width=c.ae_width)


class LMD(ImageMAE):
    """The image MAE recipe on the latent grid; ``batch["image"]`` is encoded by the frozen autoencoder first."""

    def __init__(self, config: LMDConfig):
        c = config
        c.validate("lmd")
        inner = {f.name: getattr(c, f.name) for f in dataclasses.fields(ImageMAEConfig)}
        inner.update(img_size=c.img_size // c.latent_downsample, in_chans=c.latent_channels)
        super().__init__(ImageMAEConfig(**inner))  # grid, patch embedding and decoder of the latent grid
        self.config = c
        self._autoencoder = None

    # ---- the frozen autoencoder --------------------------------------------------------------------------------------
    @property
    def autoencoder(self) -> FrozenTeacher:
        if self._autoencoder is None:
            c = self.config
            if c.autoencoder == "random":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    ae = FrozenTeacher(LatentAE(ae_config(c)), source="random")
            else:
                ae = FrozenTeacher.from_config(c, field="autoencoder")
                if ae is None:
                    raise MaeError("lmd: no autoencoder (--autoencoder)")
            ac = ae.model.config
            if (ac.latent_channels, ac.downsample) != (c.latent_channels, c.latent_downsample):
                raise MaeError(f"{c.autoencoder}: the autoencoder gives {ac.latent_channels} channels at 1/"
                               f"{ac.downsample}, the model was built for {c.latent_channels} at 1/"
                               f"{c.latent_downsample} (--autoencoder)")
            self._autoencoder = ae.to(self.pos_embed.device)
        return self._autoencoder

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's posterior mode (B, latent_channels, H / f, W / f), as float32."""
        return self.autoencoder.model.latents(images).float()

    def with_latents(self, batch: dict) -> dict:
        return batch if "latent" in batch else {**batch, "latent": self.latents(batch["image"])}

    # ---- the image MAE recipe on the latent grid ---------------------------------------------------------------------
    def forward(self, batch, generator=None):
        return super().forward(self.with_latents(batch), generator)

    def tokenize(self, batch):
        return super().tokenize({"image": self.with_latents(batch)["latent"]})

    def target(self, batch):
        """The masked-latent target: the frozen encoder's output, patchified (B, L, p * p * latent_channels)."""
        return super().target({"image": self.with_latents(batch)["latent"]})

    def make_mask(self, batch, tokens, generator=None):
        return super().make_mask({"image": self.with_latents(batch)["latent"], "mask": batch.get("mask")}, tokens,
                                 generator)

    def unpatchify(self, tokens: torch.Tensor, size=None) -> torch.Tensor:
        return unpatchify(tokens, self.config.patch_size, self.grid, self.config.latent_channels)

    # ---- pictures ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct_images(self, images: torch.Tensor, generator=None) -> dict[str, torch.Tensor]:
        """``recon``: the predicted latents (de-normalised with the true latent patch statistics when the targets
        were normalised), the visible ones pasted back, decoded by the frozen decoder; ``ceiling``: the decoder on
        the true latents (the autoencoder's own reconstruction); ``mask``: the latent mask as a pixel mask (1 =
        masked). All (B, C, H, W) in the data's normalised space."""
        batch = self.with_latents({"image": images})
        out = self.forward(batch, generator)
        target = patchify(batch["latent"], self.config.patch_size)
        pred = out.pred.float()
        if self.norm_pix_loss:
            _, (mean, scale) = normalize_patches(target, return_stats=True)
            pred = pred * scale + mean
        m = out.mask[..., None]
        decoder = self.autoencoder.model.decode_latents
        pixel_mask = unpatchify(m.expand_as(target), self.config.patch_size, self.grid, self.config.latent_channels)
        pixel_mask = torch.nn.functional.interpolate(pixel_mask[:, :1], scale_factor=self.config.latent_downsample)
        return {"recon": decoder(self.unpatchify(pred * m + target * (1 - m))), "ceiling": decoder(batch["latent"]),
                "mask": pixel_mask.expand_as(images)}


def adapt_lmd(model_cfg: LMDConfig, data_cfg, dataset) -> LMDConfig:
    """The image adapt (size, channels follow the data); the default autoencoder when none is given; the latent
    shape copied from the autoencoder's config."""
    from ..image import adapt_image

    cfg = adapt_image(model_cfg, data_cfg, dataset)
    if not cfg.autoencoder:
        batch = min(128, len(dataset)) if dataset is not None else 128
        recipe = {"epochs": cfg.ae_epochs, "batch_size": batch, "latent_channels": cfg.latent_channels,
                  "downsample": cfg.latent_downsample, "width": cfg.ae_width, "base_lr": 3e-3, "warmup_epochs": 1}
        out = cached_pretrain("latent-ae", data_cfg, recipe, prefix="latent-ae", what="latent autoencoder")
        cfg = dataclasses.replace(cfg, autoencoder=str(out), autoencoder_sha256="")
    if cfg.autoencoder != "random":
        path = Path(cfg.autoencoder)
        path = path.parent if path.name == WEIGHTS else path
        if not (path / WEIGHTS).exists():
            raise MaeError(f"{cfg.autoencoder}: autoencoder checkpoint not found (--autoencoder)")
        saved = read_config(path)
        if saved.get("method") != "latent-ae":
            raise MaeError(f"{cfg.autoencoder}: not a latent-ae run (it is {saved.get('method')!r}) (--autoencoder)")
        ac = saved["config"]
        cfg = dataclasses.replace(cfg, latent_channels=int(ac["latent_channels"]),
                                  latent_downsample=int(ac["downsample"]))
    return cfg


def visualize_lmd(model: LMD, dataset, path, num: int = 8, seed: int = 0):
    """original | masked input | decoded reconstruction (predicted latents + visible ones) | the autoencoder alone."""
    from ..viz import pyplot, save_figure

    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    images = torch.stack([dataset[i]["image"] for i in idx])
    model = model.cpu().eval()
    r = model.reconstruct_images(images, torch.Generator().manual_seed(seed))
    mean = torch.tensor(getattr(dataset, "mean", (0.5,) * images.shape[1])).view(1, -1, 1, 1)
    std = torch.tensor(getattr(dataset, "std", (0.5,) * images.shape[1])).view(1, -1, 1, 1)
    show = lambda x: (x.float() * std + mean).clamp(0, 1)  # noqa: E731
    cols = {"original": show(images), "masked input": show(images) * (1 - r["mask"]) + 0.5 * r["mask"],
            "decoded reconstruction\n(+ visible latents)": show(r["recon"]),
            "autoencoder alone\n(true latents)": show(r["ceiling"])}
    plt = pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, len(cols), figsize=(2 * len(cols), 2 * n + 0.6), squeeze=False, layout="constrained")
    for j, (title, imgs) in enumerate(cols.items()):
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(imgs[i].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if imgs.shape[1] == 1 else None,
                      vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle(f"LMD: {float(r['mask'].mean()):.0%} of the latent patches masked, decoded by the frozen decoder",
                 fontsize=9)
    return save_figure(fig, path)
