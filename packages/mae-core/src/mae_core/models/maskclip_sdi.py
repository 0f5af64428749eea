"""MaskCLIP (OpenSDI: Wang et al., "OpenSDI: Spotting Diffusion-Generated Images in the Open World", 2025; reference
code iamwangyabin/OpenSDI ``model/MaskCLIP.py``, ``model/clip_utils.py``, ``model/mae.py``): detect and localise
generated regions.

- A frozen contrastive ViT (the paper: CLIP ViT-L/14; here the library's ``image-simclr``, trained once and cached,
  or ``--teacher RUN``) read at ``teacher_layers`` (the reference hooks ``ln_2`` of layers 2, 4, 8 ... 23 of 24;
  here the raw block outputs, then a LayerNorm of our own).
- A trainable ViT initialised from an image MAE (``--init RUN``; empty: an ``image-mae`` run trained once and
  cached). After each block of ``fusion_blocks`` (the reference: blocks 1-7 of 12) an ``AttentionFusion`` adds
  back, residually, ``LN(proj(softmax(q k^T) v))`` where the *queries* come from the frozen tokens (linear + LN to
  the ViT width: the reference's 1 x 1 conv + LN) and the *keys / values* from the ViT's own tokens.
- A mask decoder (the reference's simple feature pyramid at 4x, 2x, 1x, 0.5x, each 1 x 1 conv, LN, 3 x 3 conv, LN;
  fused by a 1 x 1 conv; one cross-attention from the "fake" class vector to the fused map, broadcast and added;
  LN, dropout 0.1, 1 x 1 prediction; bilinear to the image size).
- An image-level real / fake head: the frozen cls tokens of the tapped layers through one self-attention layer
  across layers (residual + LN, dropout 0.1), their mean, a linear projection; logits = its dot products with two
  unit class vectors. The reference's class vectors are CLIP text features of learned prompts; here two learned
  vectors (there is no text encoder), and the same "fake" vector is the mask decoder's query.
- Loss (reference ``forward``): CE(image logits, label) + BCE(sigmoid(mask), region) + 20 x BCE-with-logits(mask,
  region, weight = edge band), the edge band as IMDLBenCo's ``EdgeMaskGenerator`` computes it (:func:`edge_weights`).

``teacher="none"`` is the MAE-only localiser: no frozen branch, no fusion; the image head reads the ViT's own cls
tokens after the ``fusion_blocks`` blocks.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import WEIGHTS, read_config
from ..config import field
from ..distill.common import T_CL
from ..errors import ConfigError, MaeError
from ..layers import Attention, CrossAttention, PatchEmbed2d, grid_shape, sincos_pos_embed
from ..teacher import FrozenTeacher, cached_pretrain
from .contrastive_vit import ContrastiveViT, ContrastiveViTConfig
from .mae import MaskedAutoencoder, ModelOutput, TransformerEncoder


@dataclass
class MaskCLIPSDIConfig:
    # renamed to the core's field name: runs saved with the old name still load
    __aliases__: ClassVar[dict] = {"decoder_dim": "decoder_embed_dim"}
    img_size: int = field(32, "input image side in pixels")
    patch_size: int = field(4, "patch side of the trainable ViT")
    in_chans: int = field(3, "number of image channels")
    embed_dim: int = field(128, "trainable ViT width (copied from the init run)")
    depth: int = field(4, "trainable ViT blocks (copied from the init run)")
    num_heads: int = field(4, "trainable ViT heads (copied from the init run)")
    mlp_ratio: float = field(4.0, "MLP hidden width / block width")
    drop_path: float = field(0.1, "stochastic depth of the trainable ViT (reference 0.1)", ge=0, lt=1)
    dropout: float = field(0.1, "dropout of the mask decoder and the image head (reference 0.1)", ge=0, lt=1)
    fusion_blocks: list[int] = field([1, 2], "trainable ViT blocks after which the frozen tokens are fused")
    teacher_layers: list[int] = field([1, 3], "frozen ViT blocks read, one per fusion block")
    teacher: str = field("", "frozen contrastive ViT: an image-simclr run or save_pretrained directory; empty: the "
                             "default for the data (trained once, cached under runs/teachers); 'random': random "
                             "weights (control); 'none': the MAE-only localiser (no frozen branch)")
    teacher_sha256: str = field("", "sha256 of the frozen ViT's weights (filled when first loaded)")
    teacher_embed_dim: int = field(128, "frozen ViT width (copied from its config)", ge=1)
    teacher_depth: int = field(4, "frozen ViT blocks (copied from its config)", ge=1)
    teacher_num_heads: int = field(4, "frozen ViT heads (copied from its config)", ge=1)
    teacher_epochs: int = field(6, "epochs of the default frozen ViT when it has to be trained", ge=1)
    init: str = field("", "image-mae run the trainable ViT starts from; empty: the default for the data (trained "
                          "once, cached); 'none': random initialisation")
    init_sha256: str = field("", "sha256 of the init weights (filled when first loaded)")
    init_epochs: int = field(10, "epochs of the default init MAE when it has to be trained", ge=1)
    decoder_embed_dim: int = field(32, "mask decoder width (reference 256)", ge=1)
    align_dim: int = field(64, "width of the class vectors (reference: CLIP's text width 768)", ge=1)
    edge_width: int = field(3, "edge band kernel (odd; reference 7 at 512 px)", ge=1)
    edge_lambda: float = field(20.0, "weight of the edge-weighted BCE (reference 20)", ge=0)

    def validate(self, where: str = "model") -> None:
        if self.img_size % self.patch_size:
            raise ConfigError(f"{where}.patch_size: {self.patch_size} does not divide the image side {self.img_size}")
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ConfigError(f"{where}.embed_dim: {self.embed_dim} must be divisible by num_heads and by 4")
        if len(self.fusion_blocks) != len(self.teacher_layers) or not self.fusion_blocks:
            raise ConfigError(f"{where}.teacher_layers: one frozen layer per fusion block, got {self.teacher_layers} "
                              f"for {self.fusion_blocks}")
        if not all(0 <= b < self.depth for b in self.fusion_blocks):
            raise ConfigError(f"{where}.fusion_blocks: {self.fusion_blocks} outside [0, {self.depth})")
        if not all(0 <= b < self.teacher_depth for b in self.teacher_layers):
            raise ConfigError(f"{where}.teacher_layers: {self.teacher_layers} outside [0, {self.teacher_depth})")
        if self.edge_width % 2 == 0:
            raise ConfigError(f"{where}.edge_width: must be odd, got {self.edge_width}")


def edge_weights(mask: torch.Tensor, width: int = 7) -> torch.Tensor:
    """IMDLBenCo's ``EdgeMaskGenerator``: dilate the 0/1 mask and its complement with a cross (plus-shaped) kernel of
    side ``width`` (zero padding); the edge band is where both dilations are 1. (B, 1, H, W) -> same, 0/1."""
    k = torch.zeros(1, 1, width, width, dtype=mask.dtype, device=mask.device)
    k[..., width // 2, :] = 1
    k[..., :, width // 2] = 1
    dilate = lambda m: (F.conv2d(m, k, padding=width // 2) > 0).to(mask.dtype)  # noqa: E731
    return dilate(mask) * dilate(1 - mask)


def sdi_loss(mask_logits, region, cls_logits, label, edge_width: int, edge_lambda: float) -> dict[str, torch.Tensor]:
    """The reference's loss terms and their sum: CE + BCE + lambda x edge-weighted BCE (means over every pixel)."""
    edge = F.binary_cross_entropy_with_logits(mask_logits, region, weight=edge_weights(region, edge_width))
    bce = F.binary_cross_entropy_with_logits(mask_logits, region)  # = BCELoss(sigmoid(.)) without its clamp
    ce = F.cross_entropy(cls_logits, label)
    return {"ce": ce, "bce": bce, "edge": edge_lambda * edge, "loss": ce + bce + edge_lambda * edge}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map (the reference's channel LayerNorm)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class AttentionFusion(nn.Module):
    """The frozen tokens (queries, after linear + LN to the ViT width) attend to the ViT's tokens (keys / values);
    output projection + LN. The caller adds the result to the ViT's tokens."""

    def __init__(self, frozen_dim: int, dim: int, num_heads: int):
        super().__init__()
        self.adjust = nn.Sequential(nn.Linear(frozen_dim, dim), nn.LayerNorm(dim))
        self.attn = CrossAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
        return self.norm(self.attn(self.adjust(frozen), context=x))


class MaskDecoder(nn.Module):
    """Simple feature pyramid (4x, 2x, 1x, 0.5x) -> fuse -> + broadcast cross-attention of one query -> 1 logit."""

    def __init__(self, dim: int, decoder_dim: int, query_dim: int, dropout: float = 0.1):
        super().__init__()
        head = lambda c: [nn.Conv2d(c, decoder_dim, 1), LayerNorm2d(decoder_dim),  # noqa: E731
                          nn.Conv2d(decoder_dim, decoder_dim, 3, padding=1), LayerNorm2d(decoder_dim)]
        self.stages = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, 2), LayerNorm2d(dim // 2), nn.GELU(),
                          nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2), *head(dim // 4)),
            nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, 2), *head(dim // 2)),
            nn.Sequential(*head(dim)),
            nn.Sequential(nn.MaxPool2d(2, 2, ceil_mode=True), *head(dim)),
        ])
        self.fuse = nn.Conv2d(4 * decoder_dim, decoder_dim, 1)
        self.query = nn.Linear(query_dim, decoder_dim)  # the reference's text_projection
        self.cross = CrossAttention(decoder_dim, num_heads=4 if decoder_dim % 4 == 0 else 1)
        self.norm = LayerNorm2d(decoder_dim)
        self.dropout = nn.Dropout(dropout)
        self.predict = nn.Conv2d(decoder_dim, 1, 1)

    def forward(self, x: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        feats = [stage(x) for stage in self.stages]
        size = feats[0].shape[-2:]
        x = self.fuse(torch.cat([F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats], 1))
        b, c = x.shape[:2]
        q = self.query(query).expand(b, 1, -1)
        x = x + self.cross(q, context=x.flatten(2).transpose(1, 2)).view(b, c, 1, 1)
        return self.predict(self.dropout(self.norm(x)))


class ClsAggregator(nn.Module):
    """Cls tokens of several layers (B, n, D): self-attention across layers, residual + LN, dropout, mean, linear."""

    def __init__(self, dim: int, out_dim: int, num_heads: int, dropout: float = 0.1):
        super().__init__()
        self.attn = Attention(dim, num_heads=num_heads)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(self.norm(self.attn(x) + x)).mean(1))


class MaskCLIPSDI(MaskedAutoencoder):
    """Frozen contrastive ViT + fused trainable MAE ViT + mask decoder + image head (module docstring)."""

    pool = "mean"

    def __init__(self, config: MaskCLIPSDIConfig):
        super().__init__()
        config.validate("maskclip-sdi")
        self.config = c = config
        self.grid = grid_shape((c.img_size, c.img_size), c.patch_size)
        self.patch_embed = PatchEmbed2d(c.patch_size, c.in_chans, c.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.grid)[None], persistent=False)
        self.encoder = TransformerEncoder(c.embed_dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio,
                                          drop_path=c.drop_path)
        self.fused = c.teacher != "none"
        cls_dim = c.teacher_embed_dim if self.fused else c.embed_dim
        self.fusion = nn.ModuleList([AttentionFusion(c.teacher_embed_dim, c.embed_dim, c.num_heads)
                                     for _ in c.fusion_blocks]) if self.fused else None
        self.cls_head = ClsAggregator(cls_dim, c.align_dim, num_heads=max(1, cls_dim // 32), dropout=c.dropout)
        self.class_vectors = nn.Parameter(torch.randn(2, c.align_dim) * 0.02)  # real, fake
        self.mask_decoder = MaskDecoder(c.embed_dim, c.decoder_embed_dim, c.align_dim, c.dropout)
        self.init_weights()
        self._teacher = None
        if c.init not in ("", "none"):
            self.load_init()

    # ---- the frozen ViT and the init -----------------------------------------------------------------------------------
    @property
    def teacher(self) -> FrozenTeacher:
        if self._teacher is None:
            c = self.config
            if c.teacher == "random":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    t = FrozenTeacher(ContrastiveViT(ContrastiveViTConfig(
                        img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans,
                        embed_dim=c.teacher_embed_dim, depth=c.teacher_depth, num_heads=c.teacher_num_heads)),
                        source="random")
            else:
                t = FrozenTeacher.from_config(c, field="teacher")
                if t is None:
                    raise MaeError("maskclip-sdi: no frozen ViT (--teacher)")
            self._teacher = t.to(self.pos_embed.device)
        return self._teacher

    def load_init(self) -> None:
        src = FrozenTeacher.from_config(self.config, field="init").model
        state = {k: v for k, v in src.state_dict().items() if k.startswith(("patch_embed.", "encoder."))}
        missing, unexpected = self.load_state_dict(state, strict=False)
        mine = [k for k in missing if k.startswith(("patch_embed.", "encoder."))]
        if mine or unexpected or not state:
            raise MaeError(f"{self.config.init}: weights do not fit the trainable ViT "
                           f"({', '.join((mine + list(unexpected))[:3]) or 'no encoder'}) (--init)")

    # ---- forward ----------------------------------------------------------------------------------------------------
    def fused_tokens(self, images: torch.Tensor):
        """(tokens after the final norm (B, 1 + L, D), cls tokens read by the image head (B, n, D'))."""
        c = self.config
        grid = self.patch_embed.check_input(images)
        frozen = self.teacher({"image": images}, layers=c.teacher_layers).features if self.fused else None
        x = self.patch_embed(images) + (self.pos_embed if grid == self.grid else
                                        sincos_pos_embed(c.embed_dim, grid)[None].to(images.device))
        x = torch.cat([self.encoder.cls_token.expand(len(x), -1, -1), x], 1)
        p, cls = self.encoder.num_prefix_tokens, []
        for i, blk in enumerate(self.encoder.blocks):
            x = blk(x)
            if i in c.fusion_blocks:
                j = c.fusion_blocks.index(i)
                if self.fused:
                    f = frozen[j]
                    cls.append(f[:, 0])
                    x = torch.cat([x[:, :p], x[:, p:] + self.fusion[j](x[:, p:], f[:, f.shape[1] - x.shape[1] + p:])], 1)
                else:
                    cls.append(x[:, 0])
        return self.encoder.norm(x), torch.stack(cls, 1)

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mask logits (B, 1, H, W), image logits (B, 2) [real, fake], final tokens)."""
        tokens, cls = self.fused_tokens(images)
        classes = F.normalize(self.class_vectors, dim=-1)
        cls_logits = self.cls_head(cls) @ classes.T
        p = self.encoder.num_prefix_tokens
        gh, gw = grid_shape(images.shape[-2:], self.config.patch_size)
        fmap = tokens[:, p:].transpose(1, 2).reshape(len(images), -1, gh, gw)
        mask = self.mask_decoder(fmap, classes[1][None, None])
        return F.interpolate(mask, size=images.shape[-2:], mode="bilinear", align_corners=True), cls_logits, tokens

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        images = batch["image"]
        region = batch.get("region")
        region = torch.zeros_like(images[:, :1]) if region is None else region.to(images.dtype)
        label = batch["label"] if "region" in batch else torch.zeros(len(images), dtype=torch.long, device=images.device)
        mask_logits, cls_logits, _ = self.predict(images)
        terms = sdi_loss(mask_logits, region, cls_logits, label.long(), self.config.edge_width, self.config.edge_lambda)
        with torch.no_grad():
            acc = (cls_logits.argmax(1) == label).float().mean()
        return ModelOutput(loss=terms["loss"], pred=mask_logits, target=region,
                           metrics={**{k: float(v.detach()) for k, v in terms.items() if k != "loss"},
                                    "acc": float(acc)})

    def forward_features(self, batch: dict) -> torch.Tensor:
        return self.fused_tokens(batch["image"])[0]

    def layer_id(self, name: str) -> int:
        if name.startswith("fusion."):
            return self.config.fusion_blocks[int(name.split(".")[1])] + 1
        if name.startswith(("cls_head", "class_vectors", "mask_decoder")):
            return self.encoder.depth + 1
        return super().layer_id(name)


def _copy_dims(cfg: MaskCLIPSDIConfig, path: str, method: str, flag: str, names: dict) -> MaskCLIPSDIConfig:
    p = Path(path)
    p = p.parent if p.name == WEIGHTS else p
    if not (p / WEIGHTS).exists():
        raise MaeError(f"{path}: checkpoint not found ({flag})")
    saved = read_config(p)
    if saved.get("method") != method:
        raise MaeError(f"{path}: not an {method} run (it is {saved.get('method')!r}) ({flag})")
    return dataclasses.replace(cfg, **{mine: saved["config"][theirs] for mine, theirs in names.items()})


def adapt_maskclip_sdi(model_cfg: MaskCLIPSDIConfig, data_cfg, dataset) -> MaskCLIPSDIConfig:
    """Size and channels follow the data; the default frozen ViT (``image-simclr``, the distillation T-CL recipe)
    and the default init (``image-mae``) are trained once on the real images and cached; their widths are copied."""
    from ..image import adapt_image

    cfg = adapt_image(model_cfg, data_cfg, dataset)
    real = data_cfg.real_config() if hasattr(data_cfg, "real_config") else data_cfg
    batch = min(128, len(dataset)) if dataset is not None else 128
    if not cfg.teacher:
        opts = {**T_CL, "patch_size": cfg.patch_size, "epochs": cfg.teacher_epochs, "batch_size": batch}
        cfg = dataclasses.replace(cfg, teacher=str(cached_pretrain("image-simclr", real, opts, "t-cl", "T-CL")),
                                  teacher_sha256="")
    if not cfg.init:
        opts = {"patch_size": cfg.patch_size, "epochs": cfg.init_epochs, "batch_size": batch, "warmup_epochs": 1}
        cfg = dataclasses.replace(cfg, init=str(cached_pretrain("image-mae", real, opts, "sdi-init", "MAE init")),
                                  init_sha256="")
    if cfg.init != "none":
        cfg = _copy_dims(cfg, cfg.init, "image-mae", "--init", {"embed_dim": "embed_dim", "depth": "depth",
                         "num_heads": "num_heads", "patch_size": "patch_size"})
    if cfg.teacher not in ("random", "none"):
        cfg = _copy_dims(cfg, cfg.teacher, "image-simclr", "--teacher", {"teacher_embed_dim": "embed_dim",
                         "teacher_depth": "depth", "teacher_num_heads": "num_heads"})
        patch = read_config(Path(cfg.teacher).parent if Path(cfg.teacher).name == WEIGHTS
                            else Path(cfg.teacher))["config"]["patch_size"]
        if patch != cfg.patch_size:
            raise MaeError(f"{cfg.teacher}: the frozen ViT's patch {patch} differs from the trainable ViT's "
                           f"{cfg.patch_size} (--teacher)")
    return cfg


def visualize_maskclip_sdi(model: MaskCLIPSDI, dataset, path, num: int = 8, seed: int = 0):
    """image | true region | predicted region (sigmoid) with P(fake), for fakes and reals of ``dataset``."""
    from ..viz import pyplot, save_figure

    labels = torch.as_tensor([dataset[i].get("label", 0) for i in range(len(dataset))])
    fakes, reals = (labels == 1).nonzero().squeeze(1), (labels == 0).nonzero().squeeze(1)
    k = min(num, len(dataset))
    idx = (fakes[: k - k // 4].tolist() + reals[: k // 4].tolist() + list(range(len(dataset))))[:k]
    batch = [dataset[i] for i in idx]
    images = torch.stack([b["image"] for b in batch])
    truth = torch.stack([b.get("region", torch.zeros_like(b["image"][:1])) for b in batch])
    model = model.cpu().eval()
    with torch.no_grad():
        mask, logits, _ = model.predict(images)
    prob, p_fake = mask.sigmoid(), logits.softmax(1)[:, 1]
    mean = torch.tensor(getattr(dataset, "mean", (0.5,) * images.shape[1])).view(1, -1, 1, 1)
    std = torch.tensor(getattr(dataset, "std", (0.5,) * images.shape[1])).view(1, -1, 1, 1)
    shown = (images * std + mean).clamp(0, 1)
    plt = pyplot()
    fig, axes = plt.subplots(3, k, figsize=(1.6 * k, 5.2), squeeze=False, layout="constrained")
    for j in range(k):
        for r, (img, title) in enumerate([(shown[j].permute(1, 2, 0).squeeze(-1), "fake" if labels[idx[j]] else "real"),
                                          (truth[j, 0], "truth"), (prob[j, 0], f"P(fake) {float(p_fake[j]):.2f}")]):
            ax = axes[r, j]
            ax.imshow(img.numpy(), cmap=None if r == 0 else "magma", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(title, fontsize=8)
    fig.suptitle("maskclip-sdi: image, true generated region, predicted region (sigmoid) and image-level P(fake)",
                 fontsize=9)
    return save_figure(fig, path)
