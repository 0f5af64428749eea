"""SparK (Tian et al., "Designing BERT for convolutional networks: sparse and hierarchical masked modeling",
ICLR 2023; keyu-tian/SparK ``spark.py``, ``encoder.py``, ``decoder.py``, as used by Wolfda95/SSL-MedicalImagining-
CL-MAE for small medical data sets): masked image modelling for a CNN.

- masking: a random ``round(n (1 - 0.6))`` of the n cells of the CNN's output grid (stride 32 for a ResNet) stay
  visible; the masked cells of the input are zeroed;
- the encoder (a MONAI ResNet, 2-D or 3-D, or a torchvision ResNet) runs *sparsely* (:mod:`mae_medical.sparse_cnn`):
  the mask is re-applied after every convolution and pooling, BatchNorm uses the visible positions only;
- densify: each of the four stage outputs (smallest first) gets a sparse BatchNorm, one learned mask token per
  scale in the masked positions, and a projection (1 x 1 on the smallest map, 3 x 3 on the others; identity where
  the widths already agree) to the decoder width, halved from scale to scale;
- decoder (``LightDecoder``): UNet blocks (transposed convolution x2, two 3 x 3 conv-BN with ReLU6 between), each
  adding the next densified map before it, then a 1 x 1 projection to the input channels;
- loss: MSE against the patches (one patch per grid cell) normalised by their own mean and unbiased variance,
  averaged over the masked cells only.

Ablations of the benchmark: ``sparse=False`` (the masked input goes through the dense CNN: the mask is not
re-applied and BatchNorm sees every position) and ``decoder_scales=1`` (only the smallest map reaches the decoder).
Downstream, ``encode`` runs the CNN densely and averages the last stage over space.

CPU default: the stem's stride and max-pool are off (total stride 8 instead of 32), so the embedded 32 px / 32^3
data have a 4-cell-per-side grid; ``--conv1-stride 2 --max-pool`` gives the reference's stride 32 (224 px inputs).
The reference optimiser is LAMB (base lr 2e-4 x batch / 256, weight decay 0.04, betas (0.9, 0.95), clip 5); the
default here is mae-core's AdamW with the same betas and clipping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from mae_core.config import field
from mae_core.contract import PretrainedMixin
from mae_core.errors import MaeError
from mae_core.layers import patchify, unpatchify
from mae_core.losses import masked_mse, normalize_patches
from mae_core.masking import mask_from_mask, mask_from_scores, uniform_noise
from mae_core.models import ModelOutput

from ..inputs import stacked_input
from ..sparse_cnn import SparseBatchNorm, SparseContext, sparsify

BACKBONES = ("monai", "torchvision-resnet18", "torchvision-resnet50")


@dataclass
class SparKConfig:
    spatial_dims: int = field(2, "2 (images) or 3 (volumes); follows the data", choices=[2, 3])
    in_chans: int = field(1, "input channels (follows the data)", ge=1)
    modality_names: list[str] = field([], "3-D: batch keys stacked as channels when the batch has no 'image'")
    img_size: int = field(32, "input side in pixels / voxels (follows the data)", ge=1)
    backbone: str = field("monai", "monai: MONAI ResNet (2-D or 3-D, widths / layers below); torchvision-resnet18 / "
                          "-resnet50: torchvision's (2-D)", choices=list(BACKBONES))
    widths: list[int] = field([32, 64, 128, 256], "MONAI ResNet stage widths (block_inplanes)")
    layers: list[int] = field([1, 1, 1, 1], "MONAI ResNet blocks per stage (ResNet-18: 2 2 2 2)")
    block: str = field("basic", "MONAI ResNet block", choices=["basic", "bottleneck"])
    conv1_stride: int = field(1, "stride of the stem convolution (ResNet: 2)", ge=1)
    max_pool: bool = field(False, "the stem's max-pool (ResNet: on); with conv1_stride 2: total stride 32")
    decoder_width: int = field(128, "decoder width at the smallest scale, halved per up-sampling (reference: 768)",
                               ge=1)
    mask_ratio: float = field(0.6, "fraction of grid cells masked", gt=0, lt=1)
    sparse: bool = field(True, "re-apply the mask after every conv / pool and sparse BatchNorm (off: dense ablation)")
    decoder_scales: int = field(4, "densified stage maps fed to the decoder (1: single-scale ablation)", ge=1, le=4)


@dataclass
class SparK3DConfig(SparKConfig):
    """``spark-3d``: the same model with narrower CPU defaults (3-D convolutions at full resolution are costly)."""

    spatial_dims: int = field(3, "2 (images) or 3 (volumes); follows the data", choices=[2, 3])
    widths: list[int] = field([8, 16, 32, 64], "MONAI ResNet stage widths (block_inplanes)")
    decoder_width: int = field(32, "decoder width at the smallest scale, halved per up-sampling (reference: 768)",
                               ge=1)


def build_cnn(c: SparKConfig) -> nn.Module:
    """The dense ResNet with a stem of ``conv1_stride`` / ``max_pool`` and no classifier."""
    if c.backbone == "monai":
        from monai.networks.nets import ResNet

        return ResNet(c.block, list(c.layers), list(c.widths), spatial_dims=c.spatial_dims, n_input_channels=c.in_chans,
                      conv1_t_stride=c.conv1_stride, no_max_pool=not c.max_pool, feed_forward=False)
    if c.spatial_dims != 2:
        raise MaeError(f"spark: backbone {c.backbone} is 2-D; use --backbone monai for volumes")
    import torchvision

    cnn = getattr(torchvision.models, c.backbone.split("-")[1])(weights=None)
    cnn.conv1 = nn.Conv2d(c.in_chans, 64, kernel_size=7, stride=c.conv1_stride, padding=3, bias=False)
    if not c.max_pool:
        cnn.maxpool = nn.Identity()
    cnn.fc = nn.Identity()
    return cnn


def resnet_stages(cnn: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of the four stages of a torchvision or MONAI ResNet (strides 4, 8, 16, 32 with the usual stem)."""
    x = cnn.bn1(cnn.conv1(x))
    x = cnn.relu(x) if hasattr(cnn, "relu") else cnn.act(x)
    if not getattr(cnn, "no_max_pool", False):
        x = cnn.maxpool(x)
    feats = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        x = getattr(cnn, name)(x)
        feats.append(x)
    return feats


class UNetBlock(nn.Sequential):
    """x2 up-sampling, then conv-BN-ReLU6-conv-BN (the reference's ``UNetBlock``)."""

    def __init__(self, cin: int, cout: int, dims: int):
        conv, convt = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        super().__init__(convt(cin, cin, 4, stride=2, padding=1), conv(cin, cin, 3, padding=1, bias=False), bn(cin),
                         nn.ReLU6(inplace=True), conv(cin, cout, 3, padding=1, bias=False), bn(cout))


class SparK(PretrainedMixin, nn.Module):
    method_name = "spark"

    def __init__(self, config: SparKConfig):
        super().__init__()
        self.config = c = config
        self.modalities = list(c.modality_names)
        self.context = SparseContext()
        self.encoder = build_cnn(c)
        if c.sparse:
            sparsify(self.encoder, self.context)
        self.stride = c.conv1_stride * (2 if c.max_pool else 1) * 8
        if c.img_size % self.stride:
            raise MaeError(f"spark: input size {c.img_size} is not divisible by the CNN's stride {self.stride}")
        self.grid = (c.img_size // self.stride,) * c.spatial_dims
        with torch.no_grad():
            self.encoder.eval()
            probe = torch.zeros(1, c.in_chans, *(self.stride,) * c.spatial_dims)
            self.widths = [f.shape[1] for f in resnet_stages(self.encoder, probe)]
            self.encoder.train()
        conv = nn.Conv2d if c.spatial_dims == 2 else nn.Conv3d
        self.densify_norms, self.densify_projs = nn.ModuleList(), nn.ModuleList()
        self.mask_tokens = nn.ParameterList()
        d = c.decoder_width
        for i, e in enumerate(reversed(self.widths)):  # smallest map first
            self.mask_tokens.append(nn.Parameter(torch.zeros(1, e, *(1,) * c.spatial_dims)))
            nn.init.trunc_normal_(self.mask_tokens[-1], std=0.02, a=-0.02, b=0.02)
            self.densify_norms.append(SparseBatchNorm(e, self.context))
            k = 1 if i == 0 else 3
            self.densify_projs.append(nn.Identity() if i == 0 and e == d else conv(e, d, k, padding=k // 2))
            d //= 2
        n = round(math.log2(self.stride))
        chans = [c.decoder_width // 2 ** i for i in range(n + 1)]
        if chans[-1] < 1:
            raise MaeError(f"spark: decoder_width {c.decoder_width} is too small for {n} halvings")
        self.decoder = nn.ModuleList([UNetBlock(a, b, c.spatial_dims) for a, b in zip(chans[:-1], chans[1:])])
        self.proj = conv(chans[-1], c.in_chans, 1)
        for m in list(self.decoder.modules()) + list(self.densify_projs.modules()) + [self.proj]:
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
            elif isinstance(m, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def image(self, batch: dict) -> torch.Tensor:
        x = stacked_input(batch, self.modalities, "spark")
        c = self.config
        if x.ndim != c.spatial_dims + 2 or x.shape[1] != c.in_chans:
            raise MaeError(f"spark: expected input (B, {c.in_chans}, {'S, ' * c.spatial_dims}), got {tuple(x.shape)}")
        if any(s % self.stride for s in x.shape[2:]):
            raise MaeError(f"spark: input size {tuple(x.shape[2:])} is not divisible by the CNN's stride {self.stride}")
        return x

    def make_mask(self, batch: dict, x: torch.Tensor, generator=None):
        """MaskInfo over the grid cells (1 = masked); ``batch["mask"]`` (B, cells) is used when present."""
        grid = tuple(s // self.stride for s in x.shape[2:])
        n = math.prod(grid)
        if batch.get("mask") is not None:
            return mask_from_mask(batch["mask"].to(x.device)), grid
        keep = round(n * (1 - self.config.mask_ratio))
        return mask_from_scores(uniform_noise((x.shape[0], n), generator, x.device), keep), grid

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        x = self.image(batch)
        mask, grid = self.make_mask(batch, x, generator)
        active = (mask.mask == 0).reshape(x.shape[0], 1, *grid)
        self.context.active = active
        try:
            feats = resnet_stages(self.encoder, x * self.context.at(x.shape[2:]).to(x.dtype))
            to_dec = []
            for i, f in enumerate(reversed(feats)):
                if i >= self.config.decoder_scales:
                    to_dec.append(None)
                    continue
                f = self.densify_norms[i](f)
                f = torch.where(self.context.at(f.shape[2:]), f, self.mask_tokens[i].to(f.dtype).expand_as(f))
                to_dec.append(self.densify_projs[i](f))
        finally:
            self.context.active = None
        y = 0
        for i, blk in enumerate(self.decoder):
            if i < len(to_dec) and to_dec[i] is not None:
                y = y + to_dec[i]
            y = blk(y)
        if len(to_dec) > len(self.decoder) and to_dec[len(self.decoder)] is not None:
            y = y + to_dec[len(self.decoder)]  # stride-8 stems: the full-resolution stage joins after the last block
        rec = self.proj(y)
        pred = patchify(rec, self.stride)
        target = normalize_patches(patchify(x, self.stride))
        return ModelOutput(loss=masked_mse(pred, target, mask.mask), pred=pred, mask=mask.mask, target=target,
                           extra={"grid": grid})

    @torch.no_grad()
    def reconstruct(self, batch: dict, generator=None) -> dict[str, torch.Tensor]:
        """``input``, ``masked`` and ``reconstruction`` (predictions in each patch's own mean / spread, visible
        patches pasted back, as the reference's ``vis``) images."""
        x = self.image(batch)
        out = self(batch, generator=generator)
        patches = patchify(x, self.stride)
        mean, scale = patches.mean(-1, keepdim=True), (patches.var(-1, keepdim=True) + 1e-6).sqrt()
        m = out.mask[..., None]
        back = lambda t: unpatchify(t, self.stride, out.extra["grid"], x.shape[1])  # noqa: E731
        return {"input": x, "masked": back(patches * (1 - m)),
                "reconstruction": back((out.pred * scale + mean) * m + patches * (1 - m)), "mask": out.mask}

    # ---- downstream -------------------------------------------------------------------------------------------------
    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """(B, C4): the dense CNN's last stage averaged over space."""
        self.context.active = None
        return resnet_stages(self.encoder, self.image(batch))[-1].flatten(2).mean(-1)

    def feature_dim(self, pool: str | None = None) -> int:
        return self.widths[-1]

    def num_layers(self) -> int:
        return 5

    def layer_id(self, name: str) -> int:
        """Stem 0, stage k -> k, everything after the encoder 5."""
        if name.startswith("encoder."):
            part = name.split(".")[1]
            return int(part[-1]) if part.startswith("layer") else 0
        return 5
