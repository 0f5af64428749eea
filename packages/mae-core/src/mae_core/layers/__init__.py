"""Small single-purpose building blocks shared by every domain."""
from .adversary import AdversaryHead, GradReverse, grad_reverse
from .blocks import (LayerNorm, Attention, Block, CrossAttention, CrossBlock, DropPath, LayerScale, Mlp, attention_probs,
                     cls_attention, drop_path, init_weights)
from .ema import EMA
from .fusion import CoAttentionLayer, CoAttentionStack
from .patch import PatchEmbed, PatchEmbed2d, PatchEmbed3d, grid_shape, patchify, unpatchify
from .pos_embed import resize_pos_embed, sincos_1d, sincos_pos_embed
from .queue import FeatureQueue
from .taps import TapCrossBlock

__all__ = [
    "LayerNorm", "AdversaryHead", "GradReverse", "grad_reverse",
    "Attention", "Block", "CrossAttention", "CrossBlock", "DropPath", "LayerScale", "Mlp", "drop_path", "init_weights",
    "attention_probs", "cls_attention", "EMA", "CoAttentionLayer", "CoAttentionStack",
    "PatchEmbed", "PatchEmbed2d", "PatchEmbed3d", "grid_shape", "patchify", "unpatchify",
    "resize_pos_embed", "sincos_1d", "sincos_pos_embed",
    "FeatureQueue", "TapCrossBlock",
]
