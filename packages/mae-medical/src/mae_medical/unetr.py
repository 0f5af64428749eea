"""Export a BM-MAE encoder into MONAI's UNETR (``UNETR.vit``) for segmentation fine-tuning.

UNETR's ViT takes the modalities as input channels of one patch projection (kernel 16^3, 12 blocks). The BM-MAE
per-modality projections are stacked along the input-channel axis (so a UNETR token is the sum of the modality
tokens; the biases add up), the shared sin-cos position embedding is copied for the UNETR grid, and every encoder
block maps one to one (norm1, fused qkv, out_proj, norm2, MLP). If the encoder has fewer than 12 blocks the
remaining UNETR blocks keep their initialisation (reported in the returned dict).
"""
from __future__ import annotations

import torch

from mae_core.errors import MaeError
from mae_core.layers import sincos_pos_embed


def to_unetr(model, out_channels: int, modalities: list[str] | None = None, img_size: int | None = None,
             feature_size: int = 16, norm_name: str = "instance"):
    """(UNETR with the BM-MAE encoder weights loaded into ``.vit``, report dict)."""
    from monai.networks.nets import UNETR

    c = model.config
    if c.patch_size != 16:
        raise MaeError(f"UNETR uses 16^3 patches; this model has patch {c.patch_size} (pretrain with --patch-size 16)")
    if model.encoder.depth > 12:
        raise MaeError(f"UNETR's ViT has 12 blocks; this encoder has {model.encoder.depth}")
    mods = list(modalities or model.modalities)
    for m in mods:
        if m not in model.modalities:
            raise MaeError(f"modality {m!r} is not known to this model (it knows {', '.join(model.modalities)})")
    img_size = img_size or c.img_size
    net = UNETR(in_channels=len(mods), out_channels=out_channels, img_size=img_size, feature_size=feature_size,
                hidden_size=c.embed_dim, mlp_dim=int(c.embed_dim * c.mlp_ratio), num_heads=c.num_heads,
                norm_name=norm_name, qkv_bias=True)
    vit = net.vit
    grid = tuple(s // 16 for s in (img_size,) * 3)
    with torch.no_grad():
        pe = vit.patch_embedding
        pe.patch_embeddings.weight.copy_(torch.cat([model.patch_embed[m].proj.weight for m in mods], dim=1))
        pe.patch_embeddings.bias.copy_(sum(model.patch_embed[m].proj.bias for m in mods))
        pe.position_embeddings.copy_(sincos_pos_embed(c.embed_dim, grid)[None])
        for ours, theirs in zip(model.encoder.blocks, vit.blocks):
            theirs.norm1.load_state_dict(ours.norm1.state_dict())
            theirs.norm2.load_state_dict(ours.norm2.state_dict())
            theirs.attn.qkv.load_state_dict(ours.attn.qkv.state_dict())
            theirs.attn.out_proj.load_state_dict(ours.attn.proj.state_dict())
            theirs.mlp.linear1.load_state_dict(ours.mlp.fc1.state_dict())
            theirs.mlp.linear2.load_state_dict(ours.mlp.fc2.state_dict())
        vit.norm.load_state_dict(model.encoder.norm.state_dict())
    report = {"modalities": mods, "blocks_loaded": model.encoder.depth, "blocks_total": len(vit.blocks),
              "img_size": img_size, "hidden_size": c.embed_dim}
    return net, report
