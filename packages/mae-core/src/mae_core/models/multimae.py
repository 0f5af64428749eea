"""MultiMAE (Bachmann et al., "MultiMAE: Multi-modal Multi-task Masked Autoencoders", ECCV 2022; reference code
EPFL-VILAB/MultiMAE: ``multimae/multimae.py``, ``input_adapters.py``, ``output_adapters.py``, ``criterion.py``,
``run_pretraining_multimae.py``, ``cfgs/pretrain/multimae-b_98_rgb+-depth-semseg_1600e.yaml``).

- **Inputs** (``PatchedInputAdapter``, ``SemSegInputAdapter``): RGB and depth through their own patch embeddings;
  the class map at stride ``seg_stride`` (4, nearest) through a learned 64-wide class embedding, patchified with a
  ``patch / stride`` kernel; the same fixed 2-D sin-cos positions on every modality; one learned global token.
- **Masking** (``generate_random_masks``): a fixed budget of visible tokens (98 of 3 x 196 in the reference, half of
  one modality: ``num_visible = 0``) split per sample by Dirichlet(``alpha`` = 1) (``token_budget_masking``).
- **Decoders** (``SpatialOutputAdapter`` = :class:`~mae_core.layers.task_decoder.SpatialTaskDecoder`), one per task
  (rgb, norm_rgb, depth, seg). **Losses** (``criterion.py``) on each task's masked tokens, per-sample means, then
  the mean over samples: RGB MSE, per-patch-normalised RGB MSE (``extra_norm_pix_loss``), depth L1 (standardised per
  image), segmentation CE at stride 4; weights 1. Any subset of modalities at inference: ``encode(batch,
  inputs="rgb-depth")`` or ``--probe-inputs``. Deviation: the shared encoder ends with a LayerNorm (the reference's
  pretraining encoder has none; its decoders normalise their context anyway).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check_range, field
from ..errors import ConfigError, MaeError
from ..layers import PatchEmbed2d, grid_shape, patchify, sincos_pos_embed, unpatchify
from ..layers.task_decoder import SpatialTaskDecoder
from ..losses import normalize_patches
from ..masking import MaskInfo, gather_tokens, token_budget_masking
from .mae import MaskedAutoencoder, ModelOutput, TransformerEncoder

MODALITIES = ("rgb", "depth", "seg")
INPUT_CHOICES = ["-".join(c) for n in (1, 2, 3) for c in combinations(MODALITIES, n)]
BATCH_KEY = {"rgb": "image", "depth": "depth", "seg": "seg"}


@dataclass
class MultiMAEConfig:
    img_size: int = field(32, "input side in pixels (RGB, depth and the full-resolution class map)")
    patch_size: int = field(4, "patch side in pixels")
    in_chans: int = field(3, "RGB channels")
    embed_dim: int = field(128, "encoder width")
    depth: int = field(4, "encoder blocks")
    num_heads: int = field(4, "encoder attention heads")
    decoder_embed_dim: int = field(64, "width of each task decoder (the reference: 256 for a 768-wide encoder)")
    decoder_depth: int = field(2, "self-attention blocks of each task decoder after its cross-attention and MLP")
    decoder_num_heads: int = field(4, "attention heads of the task decoders")
    mlp_ratio: float = field(4.0, "MLP hidden width / block width")
    drop_path: float = field(0.0, "stochastic depth rate of the encoder (used when fine-tuning)")
    num_visible: int = field(0, "visible-token budget over all modalities; 0: half the tokens of one modality (the "
                                "reference: 98 of 3 x 196)", ge=0)
    alpha: float = field(1.0, "Dirichlet concentration of the per-sample split of the budget", gt=0)
    seg_classes: int = field(9, "segmentation classes (set from the data)", ge=2)
    seg_stride: int = field(4, "stride of the segmentation map fed to the model and predicted (the reference: 4)",
                            ge=1)
    seg_embed_dim: int = field(64, "width of the learned class embedding of the segmentation input", ge=1)
    standardize_depth: bool = field(True, "standardise each depth map by its own mean and std (input and target)")
    norm_rgb_head: bool = field(True, "a fourth decoder predicts per-patch-normalised RGB (extra_norm_pix_loss)")
    rgb_weight: float = field(1.0, "weight of the RGB pixel MSE", ge=0)
    norm_rgb_weight: float = field(1.0, "weight of the normalised-RGB MSE", ge=0)
    depth_weight: float = field(1.0, "weight of the depth L1", ge=0)
    seg_weight: float = field(1.0, "weight of the segmentation cross-entropy", ge=0)
    probe_inputs: str = field("rgb", "modalities the frozen features see (encode / token_grid): e.g. rgb, "
                                     "rgb-depth", choices=INPUT_CHOICES)

    def validate(self, where: str = "config") -> None:
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "decoder_embed_dim",
                     "decoder_num_heads", "decoder_depth"):
            check_range(getattr(self, name), {"ge": 0 if name == "decoder_depth" else 1}, f"{where}.{name}")
        if self.img_size % self.patch_size:
            raise ConfigError(f"{where}.patch_size: {self.patch_size} does not divide the image side {self.img_size}")
        if self.patch_size % self.seg_stride:
            raise ConfigError(f"{where}.seg_stride: {self.seg_stride} does not divide the patch {self.patch_size}")
        for width, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
            if getattr(self, width) % getattr(self, heads):
                raise ConfigError(f"{where}: {heads} must divide {width}")
        total = 3 * (self.img_size // self.patch_size) ** 2
        if self.num_visible > total:
            raise ConfigError(f"{where}.num_visible: {self.num_visible} is more than the {total} tokens")


def sample_masked_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reference's masked loss: each sample's mean over its masked tokens (mask 1), then the mean over the
    samples that have any (a sample whose task is fully visible does not count)."""
    n = mask.sum(1)
    per_sample = (per_token * mask).sum(1) / n.clamp_min(1)
    valid = n > 0
    return per_sample[valid].mean() if bool(valid.any()) else per_token.sum() * 0


def parse_inputs(inputs) -> list[str]:
    names = inputs.split("-") if isinstance(inputs, str) else list(inputs)
    if not names or any(n not in MODALITIES for n in names):
        raise MaeError(f"multimae inputs {inputs!r}: choose modalities among {', '.join(MODALITIES)}")
    return [m for m in MODALITIES if m in names]


class MultiMAE(MaskedAutoencoder):
    pool = "mean"
    mask_schedule_refused = "MultiMAE keeps a fixed visible-token budget shared by a Dirichlet draw"

    def __init__(self, config: MultiMAEConfig):
        super().__init__()
        self.config = c = config
        c.validate("multimae")
        self.grid = grid_shape((c.img_size, c.img_size), c.patch_size)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.budget = c.num_visible or self.num_tokens // 2
        self.mask_ratio, self.norm_pix_loss = 1 - self.budget / (3 * self.num_tokens), False
        p, sp = c.patch_size, c.patch_size // c.seg_stride
        self.rgb_embed = PatchEmbed2d(p, c.in_chans, c.embed_dim)
        self.depth_embed = PatchEmbed2d(p, 1, c.embed_dim)
        self.seg_class_embed = nn.Embedding(c.seg_classes, c.seg_embed_dim)
        self.seg_embed = PatchEmbed2d(sp, c.seg_embed_dim, c.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.grid)[None], persistent=False)
        self.encoder = TransformerEncoder(c.embed_dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio,
                                          drop_path=c.drop_path, num_prefix_tokens=1)  # the global token
        out = {"rgb": p * p * c.in_chans, "norm_rgb": p * p * c.in_chans, "depth": p * p, "seg": sp * sp * c.seg_classes}
        tasks = ["rgb", "depth", "seg"] + (["norm_rgb"] if c.norm_rgb_head else [])
        self.decoders = nn.ModuleDict({
            t: SpatialTaskDecoder(c.embed_dim, c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads, out[t],
                                  self.grid, MODALITIES, "rgb" if t == "norm_rgb" else t, mlp_ratio=c.mlp_ratio)
            for t in tasks})
        self.init_weights()
        for emb in (self.rgb_embed, self.depth_embed, self.seg_embed):
            w = emb.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.trunc_normal_(self.seg_class_embed.weight, std=0.02)

    # ---- modalities --------------------------------------------------------------------------------------------------
    def depth_input(self, batch) -> torch.Tensor:
        d = batch["depth"].float()
        d = d[:, None] if d.ndim == 3 else d
        if self.config.standardize_depth:
            mean, std = d.mean((1, 2, 3), keepdim=True), d.std((1, 2, 3), keepdim=True)
            d = (d - mean) / (std + 1e-6)
        return d

    def seg_input(self, batch) -> torch.Tensor:
        """The class map at ``seg_stride`` (nearest), (B, H / s, W / s) long."""
        seg, c = batch["seg"], self.config
        if seg.ndim != 3 or tuple(seg.shape[1:]) != (c.img_size, c.img_size):
            raise MaeError(f"multimae: 'seg' must be (B, {c.img_size}, {c.img_size}) class indices, got "
                           f"{tuple(seg.shape)}")
        if int(seg.max()) >= c.seg_classes or int(seg.min()) < 0:
            raise MaeError(f"multimae: 'seg' holds class {int(seg.max())} but the model has {c.seg_classes} classes")
        size = c.img_size // c.seg_stride
        return F.interpolate(seg[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()

    def modality_tokens(self, batch, name: str) -> torch.Tensor:
        """(B, L, D) embedded tokens of one modality, positions added."""
        if BATCH_KEY[name] not in batch:
            raise MaeError(f"multimae: the batch has no {BATCH_KEY[name]!r} for the {name} input")
        if name == "rgb":
            x = self.rgb_embed(batch["image"])
        elif name == "depth":
            x = self.depth_embed(self.depth_input(batch))
        else:
            x = self.seg_embed(self.seg_class_embed(self.seg_input(batch)).permute(0, 3, 1, 2))
        if x.shape[1] != self.num_tokens:
            raise MaeError(f"multimae: {name} gives {x.shape[1]} tokens, the model was built for {self.num_tokens} "
                           f"({self.config.img_size} px)")
        return x + self.pos_embed.to(x.dtype)

    def targets(self, batch) -> dict[str, torch.Tensor]:
        c, rgb = self.config, patchify(batch["image"], self.config.patch_size)
        out = {"rgb": rgb, "depth": patchify(self.depth_input(batch), c.patch_size),
               "seg": patchify(self.seg_input(batch)[:, None], c.patch_size // c.seg_stride).long()}
        if c.norm_rgb_head:
            out["norm_rgb"] = normalize_patches(rgb)
        return out

    # ---- encoder and decoders ----------------------------------------------------------------------------------------
    def run(self, batch, inputs, mask: MaskInfo | None = None) -> tuple[torch.Tensor, dict, MaskInfo]:
        """Encode the ``inputs`` modalities (only ``mask``'s visible tokens; all when None) and run every decoder:
        (latent (B, 1 + K, D), {task: (B, L, out)}, mask)."""
        tokens = torch.cat([self.modality_tokens(batch, m) for m in inputs], dim=1)
        b, length = tokens.shape[:2]
        if mask is None:
            ids = torch.arange(length, device=tokens.device).expand(b, -1)
            mask = MaskInfo(ids, ids, torch.zeros(b, length, device=tokens.device))
        latent = self.encoder(gather_tokens(tokens, mask.ids_keep))
        preds = {t: dec(latent, mask.ids_keep, mask.ids_restore, inputs) for t, dec in self.decoders.items()}
        return latent, preds, mask

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        c = self.config
        b, device = batch["image"].shape[0], batch["image"].device
        mask = token_budget_masking([self.num_tokens] * 3, self.budget, b, c.alpha, generator, device)
        _, preds, mask = self.run(batch, list(MODALITIES), mask)
        targets = self.targets(batch)
        masks = dict(zip(MODALITIES, mask.mask.split(self.num_tokens, dim=1)))
        masks["norm_rgb"] = masks["rgb"]
        terms = {}
        for t in ("rgb", "norm_rgb"):
            if t in preds:
                terms[t] = sample_masked_mean(((preds[t].float() - targets[t].float()) ** 2).mean(-1), masks[t])
        terms["depth"] = sample_masked_mean((preds["depth"].float() - targets["depth"].float()).abs().mean(-1),
                                            masks["depth"])
        logits = preds["seg"].float().reshape(b, self.num_tokens, -1, c.seg_classes)
        ce = F.cross_entropy(logits.reshape(-1, c.seg_classes), targets["seg"].reshape(-1), reduction="none")
        terms["seg"] = sample_masked_mean(ce.view(b, self.num_tokens, -1).mean(-1), masks["seg"])
        weights = {"rgb": c.rgb_weight, "norm_rgb": c.norm_rgb_weight, "depth": c.depth_weight, "seg": c.seg_weight}
        loss = sum(weights[t] * v for t, v in terms.items())
        visible = {f"visible_{m}": (1 - masks[m]).sum(1).float().mean().detach() for m in MODALITIES}
        return ModelOutput(loss=loss, pred=preds["rgb"], mask=masks["rgb"], target=targets["rgb"],
                           metrics={**{f"loss_{t}": v.detach() for t, v in terms.items()}, **visible},
                           extra={"preds": preds, "targets": targets, "masks": masks, "mask_info": mask})

    # ---- downstream: any subset of modalities ------------------------------------------------------------------------
    def forward_features(self, batch: dict, inputs=None) -> torch.Tensor:
        """Every token of the ``inputs`` modalities (default ``probe_inputs``) through the encoder, no masking:
        (B, 1 + n L, D), the global token first."""
        inputs = parse_inputs(inputs or self.config.probe_inputs)
        return self.encoder(torch.cat([self.modality_tokens(batch, m) for m in inputs], dim=1))

    def encode(self, batch: dict, pool: str | None = None, inputs=None) -> torch.Tensor:
        """(B, D) features: the mean of every patch token of the input modalities (``pool="cls"``: the global
        token; ``"cls+mean"``: both)."""
        return self.pool_features(self.forward_features(batch, inputs), pool)

    def token_grid(self, batch: dict, inputs=None) -> tuple[torch.Tensor, tuple[int, ...]]:
        """((B, L, n D), grid): at each grid position the tokens of the n input modalities, concatenated."""
        feats = self.forward_features(batch, inputs)[:, 1:]
        b, _, d = feats.shape
        n = feats.shape[1] // self.num_tokens
        return feats.view(b, n, self.num_tokens, d).permute(0, 2, 1, 3).reshape(b, self.num_tokens, n * d), self.grid

    @torch.no_grad()
    def predict_maps(self, batch: dict, inputs="rgb") -> dict[str, torch.Tensor]:
        """Every task predicted from the ``inputs`` modalities, all their tokens visible: {"rgb": (B, 3, H, W),
        "depth": (B, 1, H, W) (standardised when the model standardises depth), "seg": (B, H / s, W / s) argmax}."""
        c = self.config
        _, preds, _ = self.run(batch, parse_inputs(inputs))
        sp = c.patch_size // c.seg_stride
        seg = unpatchify(preds["seg"], sp, self.grid, c.seg_classes).argmax(1)
        return {"rgb": unpatchify(preds["rgb"], c.patch_size, self.grid, c.in_chans),
                "depth": unpatchify(preds["depth"], c.patch_size, self.grid, 1), "seg": seg}


def adapt_multimae(model_cfg: MultiMAEConfig, data_cfg, dataset) -> MultiMAEConfig:
    """Image side and the number of segmentation classes follow the data."""
    import dataclasses
    classes = getattr(dataset, "seg_classes", model_cfg.seg_classes) if dataset is not None else model_cfg.seg_classes
    return dataclasses.replace(model_cfg, img_size=getattr(data_cfg, "image_size", model_cfg.img_size),
                               seg_classes=max(2, int(classes)))


@torch.no_grad()
def visualize_multimae(model: MultiMAE, dataset, path, num: int = 6, seed: int = 0):
    """Per sample: RGB, depth, classes | depth and classes predicted from RGB alone | the three masked inputs of a
    pretraining step (hidden tokens grey) | their reconstructions pasted on the visible tokens."""
    from ..data.utils import collate_dicts
    from ..viz import pyplot, save_figure

    model = model.cpu().eval()
    c = model.config
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    batch = collate_dicts([dataset[i] for i in idx])
    cross = model.predict_maps(batch, "rgb")
    out = model(batch, generator=torch.Generator().manual_seed(seed))
    preds, targets, masks = out.extra["preds"], out.extra["targets"], out.extra["masks"]
    g, p, sp, k = model.grid, c.patch_size, c.patch_size // c.seg_stride, c.seg_classes

    def paste(task, chans, patch, grey):
        m, tgt, pr = masks[task][..., None], targets[task].float(), preds[task].float()
        if task == "seg":
            pr = pr.reshape(*pr.shape[:2], -1, k).argmax(-1).float()
        hidden = m.bool().expand_as(tgt)
        return (unpatchify(torch.where(hidden, torch.full_like(tgt, grey), tgt), patch, g, chans),
                unpatchify(torch.where(hidden, pr, tgt), patch, g, chans))

    rgb_in, rgb_out = paste("rgb", c.in_chans, p, 0.0)
    dep_in, dep_out = paste("depth", 1, p, float("nan"))
    seg_in, seg_out = paste("seg", 1, sp, float("nan"))
    depth = model.depth_input(batch)
    plt = pyplot()
    cols = ["RGB", "depth", "classes", "depth from\nRGB alone", "classes from\nRGB alone", "visible RGB",
            "visible depth", "visible classes", "RGB recon.", "depth recon.", "classes recon."]
    fig, axes = plt.subplots(len(idx), len(cols), figsize=(1.3 * len(cols), 1.4 * len(idx) + 0.6), squeeze=False,
                             layout="constrained")
    show = lambda x: (x * 0.5 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy()  # noqa: E731
    for i in range(len(idx)):
        dk = dict(cmap="viridis", vmin=float(depth[i].min()), vmax=float(depth[i].max()))
        sk = dict(cmap="tab10", vmin=0, vmax=max(k - 1, 9))
        row = [(show(batch["image"][i]), {}), (depth[i, 0], dk), (batch["seg"][i], sk), (cross["depth"][i, 0], dk),
               (cross["seg"][i], sk), (show(rgb_in[i]), {}), (dep_in[i, 0], dk), (seg_in[i, 0], sk),
               (show(rgb_out[i]), {}), (dep_out[i, 0], dk), (seg_out[i, 0], sk)]
        for j, (img, kw) in enumerate(row):
            axes[i, j].imshow(img.numpy() if torch.is_tensor(img) else img, **kw)
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(cols[j], fontsize=8)
    vis = {m: int((1 - masks[m]).sum(1).float().mean()) for m in MODALITIES}
    fig.suptitle(f"MultiMAE: cross-modal prediction from RGB alone (columns 4-5) and a pretraining step with "
                 f"{model.budget} visible tokens (mean here: rgb {vis['rgb']}, depth {vis['depth']}, seg {vis['seg']}; "
                 "hidden tokens blank)", fontsize=8)
    return save_figure(fig, path)
