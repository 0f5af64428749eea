"""SimCLR on the CNN that SparK sparsifies: the contrastive baseline of Wolf et al. (2023, "Self-supervised
pre-training with contrastive and masked autoencoder methods for dealing with small datasets in deep learning for
medical imaging"; Wolfda95/SSL-MedicalImagining-CL-MAE), for the label-fraction comparison with ``spark``.

- encoder: the same dense MONAI / torchvision ResNet as ``spark`` (:func:`mae_medical.methods.spark.build_cnn`,
  the same ``encoder.*`` parameter names, so either method's encoder loads into the other), its last stage averaged
  over space;
- views and loss: mae-core's contrastive recipe (:mod:`mae_core.contrastive`, as ``image-simclr``): two views of
  every image made in ``forward`` from the trainer's generator (random resized crop 0.2-1, h-flip, colour jitter
  with probability 0.8; the grey-scale step only acts on 3 channels), a projector MLP (ReLU, no BatchNorm), and the
  NT-Xent loss over the 2B views (temperature 0.2);
- downstream: ``encode`` / ``feature_dim`` / ``layer_id`` as ``spark`` (the dense CNN, last stage averaged), so
  fine-tuning and probing take the same path.

Against the reference: the paper's contrastive arms are MoCo v2, BYOL and SwAV from PyTorch Lightning Bolts on a
ResNet-50 (MoCo v2: SGD, 65536-key queue, temperature 0.07; views: rotation up to 180 degrees with probability 0.5,
crop 0.2-1, colour jitter 0.4 / 0.4 / 0.4 / 0.1, Gaussian blur with probability 0.5, horizontal and vertical flips);
SimCLR is their queue-free, momentum-free relative, the one mae-core's recipe provides. No rotation, vertical flip or
blur here (mae-core's views), 2-D only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from mae_core.config import field
from mae_core.contract import PretrainedMixin
from mae_core.contrastive import nt_xent, simclr_pair
from mae_core.errors import ConfigError, MaeError
from mae_core.layers import Mlp
from mae_core.models import ModelOutput
from mae_core.viz import pyplot, save_figure

from ..inputs import stacked_input
from .spark import BACKBONES, SparK, build_cnn, resnet_stages


@dataclass
class SimCLRCNNConfig:
    in_chans: int = field(1, "input channels (follows the data)", ge=1)
    img_size: int = field(32, "input side in pixels (follows the data)", ge=1)
    backbone: str = field("monai", "monai: MONAI ResNet (widths / layers below); torchvision-resnet18 / -resnet50: "
                          "torchvision's", choices=list(BACKBONES))
    widths: list[int] = field([32, 64, 128, 256], "MONAI ResNet stage widths (block_inplanes), as spark")
    layers: list[int] = field([1, 1, 1, 1], "MONAI ResNet blocks per stage (ResNet-18: 2 2 2 2)")
    block: str = field("basic", "MONAI ResNet block", choices=["basic", "bottleneck"])
    conv1_stride: int = field(1, "stride of the stem convolution (ResNet: 2)", ge=1)
    max_pool: bool = field(False, "the stem's max-pool (ResNet: on)")
    proj_hidden_dim: int = field(512, "hidden width of the projector MLP", ge=1)
    proj_dim: int = field(128, "output width of the projector (the space of the loss)", ge=1)
    temperature: float = field(0.2, "temperature of the NT-Xent loss", gt=0)
    crop_scale: list[float] = field([0.2, 1.0], "area range of the random resized crop, as a fraction of the image")
    crop_aspect: list[float] = field([0.75, 1.3333], "aspect-ratio range of the crop (sampled log-uniformly)")
    flip_prob: float = field(0.5, "probability of a horizontal flip", ge=0, le=1)
    jitter_prob: float = field(0.8, "probability of colour jitter", ge=0, le=1)
    jitter: list[float] = field([0.4, 0.4, 0.4, 0.1], "colour jitter strengths: brightness, contrast, saturation, "
                                "hue (the last two act on 3 channels only)")
    grayscale_prob: float = field(0.2, "probability of turning a view grey (3 channels only)", ge=0, le=1)
    mean: list[float] = field([0.5], "per-channel mean the images were normalised with (follows the data)")
    std: list[float] = field([0.5], "per-channel std the images were normalised with (follows the data)")

    spatial_dims = 2  # not a field: build_cnn reads it; the views are 2-D

    def validate(self, where: str = "model") -> None:
        """Relations between fields: one-line ConfigError naming the field."""
        sizes = {"crop_scale": 2, "crop_aspect": 2, "jitter": 4, "mean": self.in_chans, "std": self.in_chans}
        for name, n in sizes.items():
            if len(getattr(self, name)) != n:
                raise ConfigError(f"{where}.{name}: expected {n} values, got {list(getattr(self, name))}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"{where}.crop_scale: expected 0 < low <= high <= 1, got {list(self.crop_scale)}")
        if min(self.std) <= 0:
            raise ConfigError(f"{where}.std: every value must be positive, got {list(self.std)}")


class SimCLRCNN(PretrainedMixin, nn.Module):
    method_name = "simclr-cnn"

    # downstream as spark: the dense CNN's last stage; stem 0, stage k -> k, everything else 5
    feature_dim = SparK.feature_dim
    num_layers = SparK.num_layers
    layer_id = SparK.layer_id

    def __init__(self, config: SimCLRCNNConfig):
        super().__init__()
        config.validate("model")
        self.config = c = config
        self.encoder = build_cnn(c)
        with torch.no_grad():
            self.encoder.eval()
            probe = torch.zeros(1, c.in_chans, 32, 32)
            self.widths = [f.shape[1] for f in resnet_stages(self.encoder, probe)]
            self.encoder.train()
        self.projector = Mlp(self.widths[-1], c.proj_hidden_dim, c.proj_dim, act_layer=nn.ReLU)

    def image(self, batch: dict) -> torch.Tensor:
        x = stacked_input(batch, [], "simclr-cnn")
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise MaeError(f"simclr-cnn: expected images (B, {self.config.in_chans}, H, W), got {tuple(x.shape)}")
        return x

    def views(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(2B, C, H, W): view 1 of every image, then view 2 (:func:`mae_core.contrastive.simclr_pair`)."""
        return simclr_pair(images, self.config, generator)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C4): the CNN's last stage averaged over space."""
        return resnet_stages(self.encoder, x)[-1].flatten(2).mean(-1)

    def project(self, views: torch.Tensor) -> torch.Tensor:
        return self.projector(self.features(views))

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        """Both views go through the CNN as one batch (BatchNorm statistics over the 2B views, as SimCLR)."""
        z1, z2 = self.project(self.views(self.image(batch), generator)).chunk(2)
        loss, acc = nt_xent(z1, z2, self.config.temperature)
        return ModelOutput(loss=loss, metrics={"pos_top1": acc})

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """(B, C4): the unaugmented images through the dense CNN, last stage averaged over space (as spark)."""
        return self.features(self.image(batch))


@torch.no_grad()
def visualize_simclr_cnn(model, dataset, path, num: int = 6, seed: int = 0):
    """One row per image: the image and its two views (first channel), with the cosine similarity of the two
    projections and the top-1 rate at which a view's nearest other view is its positive."""
    plt = pyplot()
    model = model.cpu().eval()
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    x = model.image({"image": torch.stack([dataset[i]["image"] for i in idx])})
    v = model.views(x, torch.Generator().manual_seed(seed))
    z1, z2 = model.project(v).chunk(2)
    cos = torch.nn.functional.cosine_similarity(z1, z2, dim=1)
    _, acc = nt_xent(z1, z2, model.config.temperature)
    n = x.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(4.2, 1.4 * n), layout="constrained", squeeze=False)
    for i in range(n):
        lo, hi = float(x[i, 0].min()), float(x[i, 0].max())
        for j, img in enumerate((x[i], v[i], v[n + i])):
            ax = axes[i, j]
            ax.imshow(img[0].float().numpy(), cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(("image", "view 1", "view 2")[j], fontsize=8)
        axes[i, 2].set_xlabel(f"cos {float(cos[i]):.2f}", fontsize=7)
    fig.suptitle(f"SimCLR (CNN) views; positive top-1 {acc:.2f} over {2 * n} views", fontsize=8)
    return save_figure(fig, path)
