"""The config fields every ViT masked autoencoder shares, under one set of names (MAE / timm vocabulary).

A method config that has all of them inherits :class:`ViTConfig` and redeclares only the fields whose default (or
method-specific help) differs. The rest of the shared vocabulary, for fields not in the base:

* ``mask_strategy``: the name of the masking strategy (its choices are the method's own).
* Renamed fields keep their old name as an alias for one release (``__aliases__``, see :mod:`mae_core.config`):
  Point-MAE / Point-CMAE / R-MAE ``decoder_dim`` -> ``decoder_embed_dim``, ``decoder_heads`` ->
  ``decoder_num_heads``; Point-MAE / Point-CMAE ``mask_type`` -> ``mask_strategy``; Audio-MAE / Bird-MAE
  ``mask_mode`` -> ``mask_strategy``.

Configs that lack some of the fields do not inherit and keep their own: the text methods (RetroMAE, DupMAE,
Starbucks: one ``num_heads`` for encoder and decoder, no decoder width / depth), BM-MAE (a visible-token budget
instead of ``mask_ratio``), Anomaly-MAE (its decoder depth is ``levels``; no ``drop_path``), the graph methods
(GraphMAE, SkeletonMAE: GNN widths and layers) and the contrastive ViT (no decoder, no masking).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import field


@dataclass
class ViTConfig:
    """Encoder and decoder shape, mask ratio and stochastic depth of a ViT masked autoencoder."""

    embed_dim: int = field(128, "encoder width")
    depth: int = field(4, "encoder blocks")
    num_heads: int = field(4, "encoder attention heads")
    decoder_embed_dim: int = field(96, "decoder width")
    decoder_depth: int = field(1, "decoder blocks")
    decoder_num_heads: int = field(4, "decoder attention heads")
    mlp_ratio: float = field(4.0, "MLP hidden width / block width")
    mask_ratio: float = field(0.75, "fraction of patches hidden from the encoder")
    drop_path: float = field(0.0, "stochastic depth rate of the encoder (used when fine-tuning)")

    def validate(self, where: str = "config") -> None:
        """Ranges and the relations between fields (called by ``mae_core.config.from_dict``); the checks live here,
        not in the field declarations, so that subclasses redeclaring a default keep them."""
        from ..config import check_range
        from ..errors import ConfigError

        for name in ("embed_dim", "depth", "num_heads", "decoder_embed_dim", "decoder_num_heads"):
            check_range(getattr(self, name), {"ge": 1}, f"{where}.{name}")
        check_range(self.decoder_depth, {"ge": 0}, f"{where}.decoder_depth")
        check_range(self.mlp_ratio, {"gt": 0}, f"{where}.mlp_ratio")
        check_range(self.mask_ratio, {"ge": 0, "lt": 1}, f"{where}.mask_ratio")
        check_range(self.drop_path, {"ge": 0, "lt": 1}, f"{where}.drop_path")
        for width, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
            if getattr(self, width) % getattr(self, heads):
                raise ConfigError(f"{where}: {heads} ({getattr(self, heads)}) must divide {width} "
                                  f"({getattr(self, width)})")
