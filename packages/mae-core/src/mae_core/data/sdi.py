"""Embedded data for detecting and localising generated image regions (OpenSDI's partial-edit setting, in miniature).

Real images are the embedded shapes (:mod:`mae_core.data.shapes`). Half of them (``fake_fraction``) get one
rectangular region, aligned to the ``patch`` grid, ``min_region`` to ``max_region`` cells on a side, repainted by a
generator; the pixel mask of that region is the ground truth, for free. Generators:

- ``mae``: an image MAE trained by the library on the real images (pixel targets, ``norm_pix_loss`` off, so its
  output is an image) reconstructs the region from the rest of the image: the block is its mask and its predicted
  pixels are pasted inside the region only (``--generator-run RUN``; empty: the default one, trained once and
  cached under ``runs/teachers``);
- ``blur``: the region replaced by a Gaussian blur (sigma 1.5 px) of the image;
- ``shuffle``: the ``patch`` x ``patch`` pixel cells inside the region permuted at random.

Samples: ``{"image": (C, S, S) normalised, "label": 0 real / 1 fake, "region": (1, S, S) float pixel mask,
"index"}``. A fake keeps its real image's index, so a real / fake pair never crosses splits. Deterministic given
the seed; the train and test splits use different real images and draws.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import field
from ..errors import ConfigError, MaeError
from ..layers import patchify, unpatchify
from .shapes import ShapesConfig, SyntheticShapes

GENERATORS = ["mae", "blur", "shuffle"]
# the default inpainting MAE: the image MAE's default 128 x 4 ViT with pixel targets
GENERATOR_RECIPE = {"norm_pix_loss": False, "batch_size": 128, "warmup_epochs": 1}


@dataclass
class SDIConfig:
    image_size: int = field(32, "image side in pixels", ge=1)
    num_train: int = field(4096, "number of training images (real + fake)", ge=1)
    num_test: int = field(1024, "number of test images (real + fake)", ge=1)
    seed: int = field(0, "seed of the real images and of the edits")
    generator: str = field("mae", "what repaints the fake regions", choices=GENERATORS)
    generator_run: str = field("", "generator mae: an image-mae run or save_pretrained directory (pixel targets); "
                                   "empty: the default one for the real images (trained once, cached)")
    generator_epochs: int = field(10, "epochs of the default generator MAE when it has to be trained", ge=1)
    fake_fraction: float = field(0.5, "fraction of the images that get a generated region", ge=0, le=1)
    patch: int = field(4, "side of the grid cells regions are aligned to (the generator MAE's patch)", ge=1)
    min_region: int = field(2, "smallest region side, in grid cells", ge=1)
    max_region: int = field(5, "largest region side, in grid cells", ge=1)

    def validate(self, where: str = "data") -> None:
        if self.min_region > self.max_region:
            raise ConfigError(f"{where}.min_region ({self.min_region}) must be <= max_region ({self.max_region})")

    def check_grid(self, where: str = "data") -> None:
        """The region grid fits the image (checked when the data are built)."""
        if self.image_size % self.patch:
            raise ConfigError(f"{where}.patch: {self.patch} does not divide the image side {self.image_size}")
        if self.max_region > self.image_size // self.patch:
            raise ConfigError(f"{where}.max_region: {self.max_region} cells do not fit a grid of "
                              f"{self.image_size // self.patch}")

    def real_config(self) -> ShapesConfig:
        """The real images' config (the default generator and the detector's default teachers train on it)."""
        return ShapesConfig(image_size=self.image_size, num_train=self.num_train, num_test=self.num_test,
                            seed=self.seed)


# ---- generators: (images (n, C, S, S) normalised, region (n, 1, S, S)) -> repainted images -------------------------------
def gaussian_blur(images: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Separable Gaussian blur (radius 3 sigma), reflect padding."""
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=images.dtype)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    x = F.pad(images, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def shuffle_cells(images: torch.Tensor, region: torch.Tensor, patch: int, g: torch.Generator) -> torch.Tensor:
    """The ``patch`` x ``patch`` cells inside each region permuted at random (cells outside stay)."""
    grid = (images.shape[-2] // patch, images.shape[-1] // patch)
    cells = patchify(images, patch)  # (n, L, p * p * C)
    inside = patchify(region, patch).amax(-1) > 0  # (n, L)
    out = cells.clone()
    for i in range(len(images)):
        idx = inside[i].nonzero().squeeze(1)
        out[i, idx] = cells[i, idx[torch.randperm(len(idx), generator=g)]]
    return unpatchify(out, patch, grid, images.shape[1])


@torch.no_grad()
def mae_inpaint(model, images: torch.Tensor, region: torch.Tensor, patch: int) -> torch.Tensor:
    """An image MAE's reconstruction of the region's tokens from the others (its token mask = the region), in
    groups of equal region area (the MAE masks the same number of tokens per sample)."""
    if getattr(model, "norm_pix_loss", False):
        raise MaeError("generator mae: the generator MAE predicts normalised patches (norm_pix_loss); train it with "
                       "--no-norm-pix-loss (--generator-run)")
    if model.config.patch_size != patch:
        raise MaeError(f"generator mae: its patch size {model.config.patch_size} differs from the data's patch "
                       f"{patch} (--generator-run)")
    model.eval()
    token_mask = patchify(region, patch).amax(-1)  # (n, L) 1 = repaint
    out = images.clone()
    counts = token_mask.sum(1)
    for n in counts.unique():
        rows = (counts == n).nonzero().squeeze(1)
        pred = model({"image": images[rows], "mask": token_mask[rows]}, generator=torch.Generator().manual_seed(0)).pred
        out[rows] = model.unpatchify(pred.float(), size=images.shape[-2:])
    return torch.where(region.bool(), out, images)


def default_generator(cfg: SDIConfig) -> Path:
    """The cached default inpainting MAE for the real images (trained now if it is not cached)."""
    from ..teacher import cached_pretrain

    recipe = {**GENERATOR_RECIPE, "patch_size": cfg.patch, "epochs": cfg.generator_epochs}
    return cached_pretrain("image-mae", cfg.real_config(), recipe, prefix="sdi-generator", what="inpainting MAE")


def load_generator(cfg: SDIConfig):
    from ..checkpoint import from_pretrained

    path = Path(cfg.generator_run) if cfg.generator_run else default_generator(cfg)
    if not path.is_dir():
        raise ConfigError(f"{cfg.generator_run}: generator run not found (--generator-run)")
    return from_pretrained(path)


def random_regions(n: int, size: int, patch: int, lo: int, hi: int, g: torch.Generator) -> torch.Tensor:
    """(n, 1, S, S) rectangles on the ``patch`` grid, sides uniform in [lo, hi] cells, corner uniform."""
    cells = size // patch
    hw = torch.randint(lo, hi + 1, (n, 2), generator=g)
    corner = (torch.rand(n, 2, generator=g) * (cells - hw + 1)).floor().long()
    ar = torch.arange(cells)
    rows = (ar[None] >= corner[:, :1]) & (ar[None] < (corner + hw)[:, :1])
    cols = (ar[None] >= corner[:, 1:]) & (ar[None] < (corner + hw)[:, 1:])
    m = (rows[:, :, None] & cols[:, None, :]).float()[:, None]
    return m.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def make_fakes(cfg: SDIConfig, images: torch.Tensor, g: torch.Generator, generator_model=None):
    """(images, labels (n,), regions (n, 1, S, S)): ``fake_fraction`` of ``images`` get a repainted region."""
    n = len(images)
    fake = torch.rand(n, generator=g) < cfg.fake_fraction
    regions = random_regions(n, images.shape[-1], cfg.patch, cfg.min_region, cfg.max_region, g) * fake.view(-1, 1, 1, 1)
    rows = fake.nonzero().squeeze(1)
    out = images.clone()
    if len(rows):
        x, r = images[rows], regions[rows]
        if cfg.generator == "blur":
            edited = torch.where(r.bool(), gaussian_blur(x), x)
        elif cfg.generator == "shuffle":
            edited = shuffle_cells(x, r, cfg.patch, g)
        else:
            edited = mae_inpaint(generator_model if generator_model is not None else load_generator(cfg), x, r,
                                 cfg.patch)
        out[rows] = edited.to(images.dtype)
    return out, fake.long(), regions


class SyntheticSDI(Dataset):
    """Real shapes and shapes with one generated region (module docstring)."""

    def __init__(self, config: SDIConfig | None = None, split: str = "train", generator_model=None):
        self.config = cfg = config or SDIConfig()
        cfg.validate()
        cfg.check_grid()
        real = SyntheticShapes(cfg.real_config(), split)
        self.mean, self.std, self.in_chans = real.mean, real.std, real.images.shape[1]
        g = torch.Generator().manual_seed(cfg.seed * 2 + (0 if split == "train" else 1) + 7919)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.images, self.labels, self.regions = make_fakes(cfg, real.images, g, generator_model)
        self.num_classes = 2
        self.classes = ["real", "fake"]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": int(self.labels[i]), "region": self.regions[i], "index": i}


def with_generator(cfg: SDIConfig, generator: str) -> SDIConfig:
    """The same data config with another generator (the unseen-generator test set)."""
    return dataclasses.replace(cfg, generator=generator)
