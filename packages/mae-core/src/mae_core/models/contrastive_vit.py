"""A contrastive ViT (SimCLR, Chen et al., ICML 2020, with a ViT backbone as in MoCo v3): two augmented views of
every image, one shared encoder, a projector MLP, and the NT-Xent loss (InfoNCE over the 2B views of the batch,
2B - 2 negatives per view). It is the contrastive teacher of the distillation methods, and a baseline for MAEs.

The encoder is the image MAE's: the same patch embedding, sin-cos positions, ``TransformerEncoder`` and parameter
names (``patch_embed.*``, ``encoder.*``), so the weights of either load into the other's encoder. Views are made
inside ``forward`` from the batch's normalised ``image`` tensor with batched tensor operations (random resized
crop, flip, colour jitter, grey-scale: :mod:`mae_core.augment`), all drawn from the trainer's generator.

Differences from the paper, for a small CPU-friendly default: the projector has no BatchNorm (so the loss does not
depend on how a batch is split between processes), no Gaussian blur (SimCLR drops it for CIFAR too), and under DDP
each process's negatives are its own share of the batch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..config import field
from ..contrastive import VIEW_PARAMS, nt_xent, simclr_pair  # noqa: F401  (VIEW_PARAMS: re-exported)
from ..errors import ConfigError
from ..layers import Mlp, PatchEmbed2d, grid_shape, sincos_pos_embed
from .image_mae import ImageMAE
from .mae import MaskedAutoencoder, ModelOutput, TransformerEncoder

POOLS = ["mean", "cls", "cls+mean"]


@dataclass
class ContrastiveViTConfig:
    img_size: int = field(32, "input image side in pixels (images are square after the data transforms)")
    patch_size: int = field(4, "patch side in pixels")
    in_chans: int = field(3, "number of image channels")
    embed_dim: int = field(128, "encoder width")
    depth: int = field(4, "encoder blocks")
    num_heads: int = field(4, "encoder attention heads")
    mlp_ratio: float = field(4.0, "MLP hidden width / block width")
    drop_path: float = field(0.0, "stochastic depth rate of the encoder (used when fine-tuning)")
    pool: str = field("mean", "features fed to the projector and returned by encode: mean of the patch tokens, "
                      "the cls token, or both", choices=POOLS)
    proj_hidden_dim: int = field(512, "hidden width of the projector MLP")
    proj_dim: int = field(128, "output width of the projector (the space of the loss)")
    temperature: float = field(0.2, "temperature of the NT-Xent loss")
    crop_scale: list[float] = field([0.2, 1.0], "area range of the random resized crop, as a fraction of the image")
    crop_aspect: list[float] = field([0.75, 1.3333], "aspect-ratio range of the crop (sampled log-uniformly)")
    flip_prob: float = field(0.5, "probability of a horizontal flip")
    jitter_prob: float = field(0.8, "probability of colour jitter")
    jitter: list[float] = field([0.4, 0.4, 0.4, 0.1], "colour jitter strengths: brightness, contrast, saturation, "
                                "hue (SimCLR's strength 0.5)")
    grayscale_prob: float = field(0.2, "probability of turning a view grey")
    mean: list[float] = field([0.5, 0.5, 0.5], "per-channel mean the images were normalised with (follows the data)")
    std: list[float] = field([0.5, 0.5, 0.5], "per-channel std the images were normalised with (follows the data)")

    def validate(self, where: str = "model") -> None:
        """Relations between fields (called by ``mae_core.config.from_dict`` and by the model): one-line
        ConfigError naming the field."""
        sizes = {"crop_scale": 2, "crop_aspect": 2, "jitter": 4, "mean": self.in_chans, "std": self.in_chans}
        for name, n in sizes.items():
            if len(getattr(self, name)) != n:
                raise ConfigError(f"{where}.{name}: expected {n} values, got {list(getattr(self, name))}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"{where}.crop_scale: expected 0 < low <= high <= 1, got {list(self.crop_scale)}")
        if self.temperature <= 0:
            raise ConfigError(f"{where}.temperature: must be positive, got {self.temperature}")
        if min(self.std) <= 0:
            raise ConfigError(f"{where}.std: every value must be positive, got {list(self.std)}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"{where}.embed_dim: {self.embed_dim} is not divisible by num_heads {self.num_heads}")



class ContrastiveViT(MaskedAutoencoder):
    """SimCLR with a ViT. ``forward`` -> NT-Xent loss of two views; ``encode`` -> pooled features of the unaugmented
    image; ``token_grid``, layer ids and grad checkpointing as every ViT here (nothing is masked: the inherited
    masking path is unused)."""

    method_name = "image-simclr"
    # the image MAE's tokenizer, reused as is: raw patches + sin-cos positions, embedded by the patch convolution
    tokenize = ImageMAE.tokenize
    embed_tokens = ImageMAE.embed_tokens
    _grid_pos = ImageMAE._grid_pos

    def __init__(self, config: ContrastiveViTConfig):
        super().__init__()
        config.validate("model")
        self.config = c = config
        self.pool = c.pool
        self.grid = grid_shape((c.img_size, c.img_size), c.patch_size)
        self.patch_embed = PatchEmbed2d(c.patch_size, c.in_chans, c.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.grid)[None], persistent=False)
        self.encoder = TransformerEncoder(c.embed_dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio,
                                          drop_path=c.drop_path)
        self.projector = Mlp(self.feature_dim(), c.proj_hidden_dim, c.proj_dim)
        self.init_weights()

    def views(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(2B, C, H, W): view 1 of every image, then view 2 (:func:`mae_core.contrastive.simclr_pair`)."""
        self.patch_embed.check_input(images)
        return simclr_pair(images, self.config, generator)

    def project(self, views: torch.Tensor) -> torch.Tensor:
        """Views (N, C, H, W) -> projector outputs (N, proj_dim)."""
        return self.projector(self.pool_features(self.forward_features({"image": views})))

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        images = batch["image"]
        z1, z2 = self.project(self.views(images, generator)).chunk(2)
        loss, acc = nt_xent(z1, z2, self.config.temperature)
        return ModelOutput(loss=loss, metrics={"pos_top1": acc})

    def layer_id(self, name: str) -> int:
        """As every ViT here (embeddings 0, block i -> i + 1), with the projector in the last layer."""
        return self.encoder.depth + 1 if name.startswith("projector") else super().layer_id(name)


def adapt_contrastive(model_cfg: ContrastiveViTConfig, data_cfg, dataset) -> ContrastiveViTConfig:
    """Follow the data: image size and channels as the image MAE does, and the dataset's normalisation statistics
    (``mean`` / ``std``; 0.5 per channel, the project's default, when it has none) for the colour augmentations."""
    from ..image import adapt_image

    cfg = adapt_image(model_cfg, data_cfg, dataset)
    n = cfg.in_chans
    mean = [float(v) for v in getattr(dataset, "mean", (0.5,) * n)]
    std = [float(v) for v in getattr(dataset, "std", (0.5,) * n)]
    return dataclasses.replace(cfg, mean=mean, std=std)


PRESETS = {
    "simclr-tiny": ({}, "SimCLR ViT for 32 px images (128 wide, 4 blocks), NT-Xent at temperature 0.2"),
    "simclr-vit-s16": (dict(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, proj_hidden_dim=2048,
                            proj_dim=256, crop_scale=[0.08, 1.0]), "ViT-S/16 at 224 px, projector 2048 -> 256"),
}
