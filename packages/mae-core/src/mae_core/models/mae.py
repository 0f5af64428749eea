"""The generic masked autoencoder.

    tokens --(masker)--> visible tokens --(encoder)--> latent --(decoder: mask tokens + positions)--> predictions
    predictions vs target --(loss on masked tokens only)--> scalar

A method subclasses :class:`MaskedAutoencoder` and supplies ``tokenize`` (tokens and their position embedding;
optionally raw patches that ``embed_tokens`` embeds after masking, so that hidden patches are never embedded),
``target`` (what each token should reconstruct) and optionally its own masker, decoder or loss. The encoder,
decoder, masking path, loss, ``encode`` and the layer ids for layer-wise lr decay are shared.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..contract import PretrainedMixin
from ..layers.blocks import Block, LayerNorm, cls_attention, init_weights
from ..losses import masked_mse, normalize_patches
from ..masking import MaskInfo, gather_tokens, mask_from_mask, random_masking, restore_tokens


@dataclass
class ModelOutput:
    """What every model's ``forward`` returns: a scalar ``loss`` plus anything to log or draw."""

    loss: torch.Tensor
    pred: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    target: torch.Tensor | None = None
    metrics: dict[str, float] = dc_field(default_factory=dict)
    extra: dict[str, Any] = dc_field(default_factory=dict)


class TransformerEncoder(nn.Module):
    """Prefix (cls) tokens + a stack of blocks + final norm, over tokens whose embedding is done by the method.

    ``pos`` is added at the input (ViT) or, with ``pos_every_block=True``, before every block (Point-MAE).
    ``grad_checkpointing`` recomputes block activations in the backward pass to save memory.
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, init_values: float | None = None, num_prefix_tokens: int = 1,
                 norm_layer: Callable[..., nn.Module] = LayerNorm, act_layer: Callable[..., nn.Module] = nn.GELU,
                 block_fn: Callable[..., nn.Module] = Block, pos_every_block: bool = False):
        super().__init__()
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_prefix_tokens = num_prefix_tokens
        self.pos_every_block = pos_every_block
        self.grad_checkpointing = False
        self.cls_token = nn.Parameter(torch.zeros(1, num_prefix_tokens, embed_dim)) if num_prefix_tokens else None
        dpr = [x.item() for x in torch.linspace(0, drop_path, depth)]
        self.blocks = nn.ModuleList([
            block_fn(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[i],
                     init_values=init_values, norm_layer=norm_layer, act_layer=act_layer)
            for i in range(depth)
        ])
        self.norm = norm_layer(embed_dim)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def set_drop_path(self, rate: float) -> None:
        from ..layers.blocks import DropPath
        for i, blk in enumerate(self.blocks):
            p = rate * i / max(1, self.depth - 1)
            for name in ("drop_path1", "drop_path2", "drop_path"):
                if hasattr(blk, name):
                    setattr(blk, name, DropPath(p) if p > 0 else nn.Identity())

    def _prefix(self, x: torch.Tensor, pos: torch.Tensor | None):
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            if pos is not None:
                pos = torch.cat([pos.new_zeros(pos.shape[0], self.num_prefix_tokens, pos.shape[-1]), pos], dim=1)
        return x, pos

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                return_hidden: bool = False, taps: Sequence[int] | None = None,
                attn_blocks: Sequence[int] | None = None):
        """(B, L, D) tokens (+ (1|B, L, D) positions) -> normed (B, prefix + L, D) (and every block's output).

        ``taps`` (block indices, negative from the end) returns ``(x, [output of each tapped block, in the order
        given])`` and keeps only those: raw block outputs (B, prefix + L, D), before the final norm, like
        ``return_hidden``; ``encoder.norm(tap)`` normalises one. Not combinable with ``return_hidden``.

        ``attn_blocks`` (block indices, negative from the end) appends ``[attention probabilities (B, heads,
        prefix + L, prefix + L) of each chosen block, in the order given]`` as the last element of the result:
        ``(x, attns)``, ``(x, hidden, attns)`` or ``(x, taps, attns)``. Only those blocks compute their attention
        explicitly; the others keep the SDPA path. :meth:`cls_attention` takes row 0 without the prefix columns.
        """
        tap_ids = self.tap_indices(taps) if taps is not None else None
        if tap_ids is not None and return_hidden:
            raise ValueError("TransformerEncoder: pass either return_hidden or taps, not both")
        attn_ids = self.tap_indices(attn_blocks) if attn_blocks is not None else None
        if pos is not None and not self.pos_every_block:
            x = x + pos
            pos = None
        x, pos = self._prefix(x, pos)
        hidden = []
        tapped: dict[int, torch.Tensor] = {}
        attns: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            if pos is not None:
                x = x + pos
            if attn_ids is not None and i in attn_ids:
                if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                    x, attns[i] = checkpoint(blk, x, attn_mask, True, use_reentrant=False)
                else:
                    x, attns[i] = blk(x, attn_mask=attn_mask, return_attention=True)
            elif self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, attn_mask, use_reentrant=False)
            else:
                x = blk(x, attn_mask=attn_mask)
            if return_hidden:
                hidden.append(x)
            if tap_ids is not None and i in tap_ids:
                tapped[i] = x
        x = self.norm(x)
        out = (x, [tapped[i] for i in tap_ids]) if tap_ids is not None else (x, hidden) if return_hidden else (x,)
        if attn_ids is not None:
            out = (*out, [attns[i] for i in attn_ids])
        return out if len(out) > 1 else x

    def cls_attention(self, attn: torch.Tensor) -> torch.Tensor:
        """Row 0 (the cls token) of ``attn`` (B, heads, prefix + L, prefix + L) without the prefix columns:
        (B, heads, L), the attention of the cls token to every patch token."""
        return cls_attention(attn, self.num_prefix_tokens)

    def tap_indices(self, taps: Sequence[int]) -> list[int]:
        """Block indices in ``[0, depth)`` for ``taps`` (negative indices count from the end); a one-line
        ValueError names an index out of range."""
        out = []
        for t in taps:
            if not -self.depth <= int(t) < self.depth:
                raise ValueError(f"encoder tap {t} is out of range for {self.depth} blocks")
            out.append(int(t) % self.depth)
        return out


class MAEDecoder(nn.Module):
    """MAE decoder: project to decoder width, re-insert the learned mask token with ``ids_restore``, add decoder
    positions, run blocks, predict ``pred_dim`` values per token.

    ``select`` (B, M) restricts decoding to a subset of positions (VideoMAE V2 dual masking); ``pos`` overrides the
    fixed position embedding (e.g. BM-MAE adds a per-modality embedding).
    """

    def __init__(self, embed_dim: int, decoder_dim: int, depth: int, num_heads: int, pred_dim: int,
                 pos_embed: torch.Tensor | None = None, num_prefix_tokens: int = 1, mlp_ratio: float = 4.0,
                 norm_layer: Callable[..., nn.Module] = LayerNorm, block_fn: Callable[..., nn.Module] = Block):
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        if pos_embed is not None:
            self.register_buffer("pos_embed", pos_embed.reshape(1, -1, decoder_dim).clone(), persistent=False)
        else:
            self.pos_embed = None
        self.blocks = nn.ModuleList([block_fn(decoder_dim, num_heads, mlp_ratio=mlp_ratio, norm_layer=norm_layer)
                                     for _ in range(depth)])
        self.norm = norm_layer(decoder_dim)
        self.pred = nn.Linear(decoder_dim, pred_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, pos: torch.Tensor | None = None,
                select: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.pred(self.norm(self.hidden(latent, ids_restore, pos, select,
                                               attn_mask=attn_mask)[:, self.num_prefix_tokens:]))

    def hidden(self, latent: torch.Tensor, ids_restore: torch.Tensor, pos: torch.Tensor | None = None,
               select: torch.Tensor | None = None, blocks: int | None = None,
               attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The raw hidden state (B, prefix + L, decoder_dim) after the first ``blocks`` decoder blocks (all when
        None), before the final norm and the prediction head; only those blocks run (G2SD's teacher target).
        ``attn_mask``: passed to every block (e.g. a key-padding mask (B, 1, 1, prefix + L), True = may attend)."""
        if blocks is not None and not 0 <= blocks <= len(self.blocks):
            raise ValueError(f"decoder blocks {blocks} out of range for a {len(self.blocks)}-block decoder")
        p = self.num_prefix_tokens
        x = self.embed(latent)
        prefix, x = x[:, :p], restore_tokens(x[:, p:], self.mask_token, ids_restore)
        pos = self.pos_embed if pos is None else pos
        if pos is not None:
            x = x + pos
        if select is not None:
            x = gather_tokens(x, select)
        x = torch.cat([prefix, x], dim=1)
        for blk in self.blocks[:blocks]:
            x = blk(x) if attn_mask is None else blk(x, attn_mask=attn_mask)
        return x


class MaskedAutoencoder(PretrainedMixin, nn.Module):
    """Base class of every transformer MAE. Subclasses implement :meth:`tokenize` and :meth:`target`.

    Attributes a subclass sets in ``__init__`` (through :meth:`build_mae`): ``encoder``, ``decoder``,
    ``mask_ratio``, ``norm_pix_loss``.
    """

    method_name = "mae"
    pool = "cls+mean"
    # why a method refuses ``--mask-schedule`` although it has a ``mask_ratio`` (it masks by another rule); None: the
    # schedule drives ``mask_ratio``
    mask_schedule_refused: str | None = None

    # ---- construction --------------------------------------------------------------------------------------------
    def build_mae(self, *, embed_dim: int, depth: int, num_heads: int, decoder_dim: int, decoder_depth: int,
                  decoder_heads: int, pred_dim: int, decoder_pos: torch.Tensor | None, mask_ratio: float,
                  norm_pix_loss: bool = False, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                  num_prefix_tokens: int = 1, pos_every_block: bool = False) -> None:
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.encoder = TransformerEncoder(embed_dim, depth, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path,
                                          num_prefix_tokens=num_prefix_tokens, pos_every_block=pos_every_block)
        self.decoder = MAEDecoder(embed_dim, decoder_dim, decoder_depth, decoder_heads, pred_dim,
                                  pos_embed=decoder_pos, num_prefix_tokens=num_prefix_tokens, mlp_ratio=mlp_ratio)

    def init_weights(self) -> None:
        """MAE initialisation of every linear / norm layer (token parameters keep their normal(0.02) init)."""
        self.apply(init_weights)

    # ---- what a method supplies -------------------------------------------------------------------------------------
    def tokenize(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(tokens (B, L, D), encoder position embedding (1|B, L, D) or None)."""
        raise NotImplementedError

    def target(self, batch: dict) -> torch.Tensor:
        """What each token should reconstruct, (B, L, P)."""
        raise NotImplementedError

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Applied to the tokens after masking (identity by default). A method whose ``tokenize`` returns raw
        patches embeds them here, so that only the visible patches are embedded during pretraining."""
        return tokens

    def make_mask(self, batch: dict, tokens: torch.Tensor, generator: torch.Generator | None = None) -> MaskInfo:
        """Default: MAE random masking at ``self.mask_ratio``; ``batch['mask']`` (B, L) is used when present."""
        if "mask" in batch and batch["mask"] is not None:
            return mask_from_mask(batch["mask"].to(tokens.device))
        return random_masking(tokens.shape[0], tokens.shape[1], self.mask_ratio, generator, tokens.device)

    # ---- shared path -------------------------------------------------------------------------------------------------
    def forward_encoder(self, tokens: torch.Tensor, pos: torch.Tensor | None, mask: MaskInfo) -> torch.Tensor:
        x = self.embed_tokens(gather_tokens(tokens, mask.ids_keep))
        if pos is not None:
            pos = gather_tokens(pos.expand(tokens.shape[0], -1, -1), mask.ids_keep)
        return self.encoder(x, pos)

    def forward_decoder(self, latent: torch.Tensor, mask: MaskInfo, batch: dict) -> torch.Tensor:
        return self.decoder(latent, mask.ids_restore)

    def prepare_target(self, target: torch.Tensor) -> torch.Tensor:
        return normalize_patches(target) if self.norm_pix_loss else target

    def forward_loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mse(pred, target, mask)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        tokens, pos = self.tokenize(batch)
        mask = self.make_mask(batch, tokens, generator)
        latent = self.forward_encoder(tokens, pos, mask)
        pred = self.forward_decoder(latent, mask, batch)
        target = self.prepare_target(self.target(batch))
        loss = self.forward_loss(pred, target, mask.mask)
        return ModelOutput(loss=loss, pred=pred, mask=mask.mask, target=target)

    # ---- downstream --------------------------------------------------------------------------------------------------
    def forward_features(self, batch: dict) -> torch.Tensor:
        """Unmasked tokens through the encoder: (B, prefix + L, D), normed."""
        tokens, pos = self.tokenize(batch)
        return self.encoder(self.embed_tokens(tokens), pos)

    def pool_features(self, feats: torch.Tensor, pool: str | None = None) -> torch.Tensor:
        p = self.encoder.num_prefix_tokens
        pool = pool or self.pool
        patch = feats[:, p:].mean(1)
        if pool == "mean" or p == 0:
            return patch
        if pool == "cls":
            return feats[:, 0]
        return torch.cat([feats[:, 0], patch], dim=-1)

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """(B, F) features for probes: by default the cls token and the mean of the patch tokens, concatenated."""
        return self.pool_features(self.forward_features(batch), pool)

    def feature_dim(self, pool: str | None = None) -> int:
        d = self.encoder.embed_dim
        pool = pool or self.pool
        return 2 * d if pool == "cls+mean" and self.encoder.num_prefix_tokens else d

    def token_grid(self, batch: dict) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Patch tokens without prefix arranged for grid probes: ((B, L, D), grid shape)."""
        feats = self.forward_features(batch)[:, self.encoder.num_prefix_tokens:]
        return feats, tuple(getattr(self, "grid", (feats.shape[1],)))

    def num_layers(self) -> int:
        return self.encoder.depth + 1

    def layer_id(self, name: str) -> int:
        """Layer id for layer-wise lr decay: embeddings 0, encoder block i -> i + 1, everything after -> depth + 1."""
        depth = self.encoder.depth
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        if name.startswith("encoder.norm") or name.startswith("head") or name.startswith("decoder"):
            return depth + 1
        return 0

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.grad_checkpointing = enable
