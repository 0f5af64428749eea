"""BM-MAE (Robinet et al. 2025): one masked autoencoder for 3-D multimodal MRI that works with any subset of
modalities.

- every modality (T1, T1ce, T2, FLAIR; names configurable) has its own 3-D patch projection (one channel);
  all modalities share one fixed 3-D sin-cos position embedding;
- the encoder sees the visible tokens of every present modality concatenated, plus one cls token; there is no
  modality embedding in the encoder;
- masking: a fixed budget K of visible tokens (25 % of all tokens) split between the modalities by a Dirichlet
  draw p per sample, modality g keeping round(p_g K) random tokens, as the reference code
  (:func:`~mae_medical.methods.budget_masking.dirichlet_round_masking`; ``budget_split="race"`` is mae-core's
  flatter exponential race, :func:`mae_core.masking.token_budget_masking`);
- decoder: project to decoder width, re-insert mask tokens, add a learned per-modality embedding plus the position
  embedding, a few blocks, predict the voxels of every patch of every modality;
- loss: MSE on the masked patches, summed over modalities.

A batch carries one tensor per modality ``batch[name]`` of shape (B, 1, D, H, W); the modalities present in the
batch are the ones used (any subset, same weights). Internally tokens live in a fixed "slot space" of
``len(modalities) x L`` tokens (modality-major), so an absent modality is simply a group whose tokens are never
visible; the decoder still predicts it (imputation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn

from mae_core.config import field
from mae_core.errors import MaeError
from mae_core.layers import Block, PatchEmbed3d, grid_shape, patchify, sincos_pos_embed, unpatchify
from mae_core.losses import masked_mse, normalize_patches
from mae_core.masking import MaskInfo, gather_tokens, mask_from_mask, token_budget_masking
from mae_core.models import MAEDecoder, MaskedAutoencoder, ModelOutput

from .budget_masking import dirichlet_round_masking

DEFAULT_MODALITIES = ["t1", "t1ce", "t2", "flair"]


@dataclass
class BMMAEConfig:
    modality_names: list[str] = field(list(DEFAULT_MODALITIES), "modalities the model knows, in its order (the data's "
                                      "--modalities are added automatically)")
    img_size: int = field(32, "side of the (cubic) training crop in voxels")
    patch_size: int = field(8, "side of a cubic 3-D patch in voxels (paper: 16 on 128^3)")
    embed_dim: int = field(128, "encoder width")
    depth: int = field(4, "encoder blocks (UNETR export needs <= 12, patch 16)")
    num_heads: int = field(4, "encoder attention heads")
    decoder_embed_dim: int = field(96, "decoder width")
    decoder_depth: int = field(2, "decoder blocks")
    decoder_num_heads: int = field(4, "decoder attention heads")
    mlp_ratio: float = field(4.0, "MLP hidden width / block width (the reference: 2, mlp_dim 1536 at width 768)")
    decoder_mlp_ratio: float | None = field(None, "decoder MLP hidden width / decoder width (default: mlp_ratio; "
                                            "the reference: 4, its mlp_dim 1536 at width 384)")
    decoder_dropout: float = field(0.0, "dropout in the decoder blocks (attention weights, attention output, MLP; "
                                        "the reference: 0.1)", ge=0, lt=1)
    visible_fraction: float = field(0.25, "visible-token budget as a fraction of all tokens of the present modalities")
    dirichlet_alpha: float = field(1.0, "concentration of the Dirichlet split of the budget between modalities", gt=0)
    budget_split: str = field("round", "round: modality g keeps round(p_g x budget) tokens (the reference); race: "
                                       "mae-core's exponential race (about p_g x budget, a flatter split)",
                              choices=["round", "race"])
    norm_pix_loss: bool = field(False, "normalise each target patch (off: imputation needs intensities)")
    drop_path: float = field(0.0, "stochastic depth rate of the encoder (used when fine-tuning)")


class BMMAE(MaskedAutoencoder):
    """Multimodal 3-D MAE with per-modality tokenizers and a Dirichlet token budget."""
    mask_schedule_refused = "it keeps a visible-token budget (visible_fraction), not a mask ratio"

    method_name = "bm-mae"
    pool = "mean"

    def __init__(self, config: BMMAEConfig):
        super().__init__()
        self.config = c = config
        if len(set(c.modality_names)) != len(c.modality_names) or not c.modality_names:
            raise MaeError(f"modality names must be unique and non-empty, got {c.modality_names}")
        if not 0.0 < c.visible_fraction < 1.0:
            raise MaeError(f"visible_fraction must be in (0, 1), got {c.visible_fraction}")
        self.modalities = list(c.modality_names)
        self.grid = grid_shape((c.img_size,) * 3, c.patch_size)
        self.patch_embed = nn.ModuleDict({m: PatchEmbed3d(c.patch_size, 1, c.embed_dim) for m in self.modalities})
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.grid)[None], persistent=False)
        self.register_buffer("decoder_pos", sincos_pos_embed(c.decoder_embed_dim, self.grid)[None], persistent=False)
        self.build_mae(embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
                       decoder_dim=c.decoder_embed_dim, decoder_depth=c.decoder_depth,
                       decoder_heads=c.decoder_num_heads, pred_dim=c.patch_size**3, decoder_pos=None,
                       mask_ratio=1.0 - c.visible_fraction, norm_pix_loss=c.norm_pix_loss, mlp_ratio=c.mlp_ratio,
                       drop_path=c.drop_path)
        if c.decoder_dropout > 0 or (c.decoder_mlp_ratio is not None and c.decoder_mlp_ratio != c.mlp_ratio):
            block = partial(Block, proj_drop=c.decoder_dropout, attn_drop=c.decoder_dropout)
            self.decoder = MAEDecoder(c.embed_dim, c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads,
                                      c.patch_size**3, pos_embed=None, num_prefix_tokens=1,
                                      mlp_ratio=c.decoder_mlp_ratio or c.mlp_ratio, block_fn=block)
        # learned per-modality embedding, added in the decoder only
        self.decoder_modality_embed = nn.Parameter(torch.zeros(len(self.modalities), 1, c.decoder_embed_dim))
        self.init_weights()
        nn.init.normal_(self.decoder_modality_embed, std=0.02)
        for pe in self.patch_embed.values():
            w = pe.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    # ---- which modalities a batch carries ----------------------------------------------------------------------------
    def present(self, batch: dict) -> list[int]:
        """Indices (model order) of the modalities in ``batch``; unknown names are an error."""
        known = set(self.modalities)
        for k, v in batch.items():
            if isinstance(v, torch.Tensor) and v.ndim == 5 and k not in known and k not in ("mask", "seg", "label"):
                raise MaeError(f"modality {k!r} is not known to this model (it knows {', '.join(self.modalities)})")
        idx = [i for i, m in enumerate(self.modalities) if batch.get(m) is not None]
        if not idx:
            raise MaeError(f"the batch has none of the model's modalities ({', '.join(self.modalities)})")
        shapes = {tuple(batch[self.modalities[i]].shape) for i in idx}
        if len(shapes) != 1:
            raise MaeError(f"modalities have different shapes: "
                           + ", ".join(f"{self.modalities[i]} {tuple(batch[self.modalities[i]].shape)}" for i in idx))
        return idx

    def _grid_of(self, batch: dict, idx: list[int]) -> tuple[int, int, int]:
        return grid_shape(batch[self.modalities[idx[0]]].shape[-3:], self.config.patch_size)

    def _pos(self, grid, dim: int, cached: torch.Tensor) -> torch.Tensor:
        if tuple(grid) == tuple(self.grid):
            return cached
        return sincos_pos_embed(dim, grid)[None].to(cached.device)

    # ---- patch embedding -------------------------------------------------------------------------------------------
    def patches(self, batch: dict, idx: list[int] | None = None) -> torch.Tensor:
        """(B, M * L, p^3) voxels of every patch of every modality in slot space (zeros for absent modalities).

        This is both the reconstruction target and the input of the patch projections."""
        idx = self.present(batch) if idx is None else idx
        ref = batch[self.modalities[idx[0]]]
        parts, zeros = [], None
        for i, m in enumerate(self.modalities):
            if i in idx:
                parts.append(patchify(batch[m].float(), self.config.patch_size))
            else:
                if zeros is None:
                    zeros = patchify(torch.zeros_like(ref, dtype=torch.float32), self.config.patch_size)
                parts.append(zeros)
        return torch.cat(parts, dim=1)

    def _embed(self, i: int, patches: torch.Tensor) -> torch.Tensor:
        """Modality ``i``'s patch projection applied to flat patches (mae-core's ``PatchEmbed.embed_patches``: the
        convolution with kernel = stride = patch as a matrix product, in :func:`patchify`'s voxel order)."""
        return self.patch_embed[self.modalities[i]].embed_patches(patches)

    def embed_patches(self, patches: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """Tokens (N, D) of flat patches (N, p^3) whose modality index (model order) is ``modality`` (N,): the
        patches are grouped by modality and each group goes through its own projection in one matrix product, so
        only the given patches are embedded (the visible ones while pre-training)."""
        order = torch.argsort(modality, stable=True)
        counts = torch.bincount(modality, minlength=len(self.modalities)).tolist()
        groups = patches[order].split(counts)
        out = torch.cat([self._embed(i, x) for i, x in enumerate(groups) if counts[i]])
        return out[torch.argsort(order)]

    # ---- MaskedAutoencoder hooks ---------------------------------------------------------------------------------------
    def tokenize(self, batch: dict):
        """Tokens in slot space (B, M * L, D) (zeros for absent modalities) and the shared position embedding."""
        idx = self.present(batch)
        grid = self._grid_of(batch, idx)
        length = math.prod(grid)
        patches = self.patches(batch, idx)
        b = patches.shape[0]
        tokens = patches.new_zeros(b, len(self.modalities), length, self.config.embed_dim)
        for i in idx:
            tokens[:, i] = self._embed(i, patches[:, i * length:(i + 1) * length])
        pos = self._pos(grid, self.config.embed_dim, self.pos_embed).repeat(1, len(self.modalities), 1)
        return tokens.reshape(b, -1, self.config.embed_dim), pos

    def target(self, batch: dict) -> torch.Tensor:
        """(B, M * L, p^3) voxels of every patch of every modality (zeros for absent modalities)."""
        return self.patches(batch)

    def make_mask(self, batch: dict, tokens: torch.Tensor, generator=None, present: list[int] | None = None,
                  num_visible: int | None = None) -> MaskInfo:
        """Token budget over the present modalities, laid out in slot space (absent modalities always masked)."""
        if batch.get("mask") is not None:
            return mask_from_mask(batch["mask"].to(tokens.device))
        present = self.present(batch) if present is None else present
        m = len(self.modalities)
        length = tokens.shape[1] // m
        b = tokens.shape[0]
        total = length * len(present)
        k = int(total * self.config.visible_fraction) if num_visible is None else num_visible
        split = dirichlet_round_masking if self.config.budget_split == "round" else token_budget_masking
        sub = split([length] * len(present), k, b, alpha=self.config.dirichlet_alpha, generator=generator,
                    device=tokens.device)
        full = torch.ones(b, m, length, device=tokens.device)
        full[:, present] = sub.mask.reshape(b, len(present), length)
        return mask_from_mask(full.reshape(b, m * length))

    def forward_decoder(self, latent: torch.Tensor, mask: MaskInfo, batch: dict) -> torch.Tensor:
        m = len(self.modalities)
        length = mask.mask.shape[1] // m
        grid = self._grid_of(batch, self.present(batch))
        dpos = self._pos(grid, self.config.decoder_embed_dim, self.decoder_pos)  # (1, L, Dd)
        pos = (dpos[:, None] + self.decoder_modality_embed[None]).reshape(1, m * length, -1)
        return self.decoder(latent, mask.ids_restore, pos=pos)

    def group_weights(self, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        """(B, M * L) 1 on masked tokens of present modalities."""
        b = mask.shape[0]
        m = len(self.modalities)
        present = torch.zeros(m, device=mask.device)
        present[self.present(batch)] = 1
        return mask * present.repeat_interleave(mask.shape[1] // m)[None].expand(b, -1)

    def forward_loss_per_modality(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                                  batch: dict, present: list[int] | None = None) -> dict[str, torch.Tensor]:
        """Masked MSE of each present modality (mean over its masked patches), all modalities in one reduction."""
        present = self.present(batch) if present is None else present
        m = len(self.modalities)
        b = pred.shape[0]
        err = ((pred - target) ** 2).mean(-1).reshape(b, m, -1)
        mask = mask.reshape(b, m, -1)
        per = (err * mask).sum((0, 2)) / mask.sum((0, 2)).clamp_min(1.0)
        return {self.modalities[i]: per[i] for i in present}

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        idx = self.present(batch)
        patches = self.patches(batch, idx)  # (B, M * L, P): projection input and target
        b, total, _ = patches.shape
        length = total // len(self.modalities)
        mask = self.make_mask(batch, patches, generator, present=idx)
        # embed only the visible patches, each with its modality's projection; shared positions
        ids = mask.ids_keep
        vis = gather_tokens(patches, ids)
        x = self.embed_patches(vis.reshape(-1, vis.shape[-1]), (ids // length).reshape(-1)).reshape(b, ids.shape[1], -1)
        pos = self._pos(self._grid_of(batch, idx), self.config.embed_dim, self.pos_embed)[0][ids % length]
        latent = self.encoder(x, pos)
        pred = self.forward_decoder(latent, mask, batch)
        target = self.prepare_target(patches)
        losses = self.forward_loss_per_modality(pred, target, mask.mask, batch, idx)
        loss = sum(losses.values())
        values = torch.stack(list(losses.values())).detach().tolist()
        metrics = {f"loss_{k}": v for k, v in zip(losses, values)}
        return ModelOutput(loss=loss, pred=pred, mask=mask.mask, target=target, metrics=metrics)

    def prepare_target(self, target: torch.Tensor) -> torch.Tensor:
        return normalize_patches(target) if self.norm_pix_loss else target

    # ---- downstream: any subset of modalities -----------------------------------------------------------------------
    def forward_features(self, batch: dict) -> torch.Tensor:
        """All tokens of the present modalities (no masking) through the encoder: (B, 1 + Mp * L, D)."""
        tokens, pos = self.tokenize(batch)
        idx = self.present(batch)
        b = tokens.shape[0]
        m = len(self.modalities)
        length = tokens.shape[1] // m
        tokens = tokens.reshape(b, m, length, -1)[:, idx].reshape(b, len(idx) * length, -1)
        pos = pos.reshape(1, m, length, -1)[:, idx].reshape(1, len(idx) * length, -1)
        return self.encoder(tokens, pos)

    @torch.no_grad()
    def reconstruct(self, batch: dict, generator=None, num_visible: int | None = None) -> dict[str, torch.Tensor]:
        """Volumes (B, 1, D, H, W) predicted for every modality of the model from the visible tokens of the present
        ones. ``num_visible=None`` shows the encoder every token of the present modalities (imputation)."""
        tokens, pos = self.tokenize(batch)
        present = self.present(batch)
        b = tokens.shape[0]
        m = len(self.modalities)
        length = tokens.shape[1] // m
        if num_visible is None:
            full = torch.ones(b, m, length, device=tokens.device)
            full[:, present] = 0
            mask = mask_from_mask(full.reshape(b, -1))
        else:
            mask = self.make_mask({}, tokens, generator, present=present, num_visible=num_visible)
        latent = self.forward_encoder(tokens, pos, mask)
        pred = self.forward_decoder(latent, mask, batch).float()
        grid = self._grid_of(batch, present)
        out = {}
        for i, name in enumerate(self.modalities):
            out[name] = unpatchify(pred[:, i * length:(i + 1) * length], self.config.patch_size, grid, 1)
        out["_mask"] = mask.mask
        return out


PRESETS = {
    # name: (overrides {"model", "data", "train", "dataset"}, description)
    "bm-mae-tiny": ({"model": dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=32,
                                   decoder_depth=1, decoder_num_heads=4), "data": dict(image_size=32)},
                    "tiny BM-MAE for 32^3 volumes, patch 8, 64 x 2 encoder (tests, quick checks)"),
    # the reference's pretrain_bmmae.py defaults and bmmae/augmentations.py get_train_transforms
    "bm-mae-paper": ({"dataset": "brain-folder",
                      "model": dict(img_size=128, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=2.0,
                                    decoder_embed_dim=384, decoder_depth=3, decoder_num_heads=12,
                                    decoder_mlp_ratio=4.0, decoder_dropout=0.1, visible_fraction=0.25,
                                    budget_split="round", norm_pix_loss=False),
                      "data": dict(image_size=128, spacing=[1.0, 1.0, 1.0], train_crop="center", crops_per_case=1,
                                   flip_prob=0.5, flip_axes=[0, 1, 2], intensity_scale=0.1, intensity_shift=0.1),
                      "train": dict(epochs=1000, batch_size=6, lr=1e-4, warmup_epochs=50, min_lr=2.5e-5,
                                    weight_decay=0.05, betas=(0.9, 0.999))},
                     "the paper's setting on a BraTS-style --data folder: 1 mm, 128^3 centre crop, flips on 3 axes, "
                     "intensity scale / shift 0.1; patch 16, ViT-B (12 x 768, MLP 1536), decoder 3 x 384 (MLP 1536, "
                     "dropout 0.1); AdamW lr 1e-4, batch 6, 50 warm-up epochs of 1000 (GPU)"),
}
