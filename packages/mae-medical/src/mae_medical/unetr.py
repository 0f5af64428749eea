"""Export a 3-D ViT MAE encoder (BM-MAE, Hi-End-MAE) into MONAI's UNETR (``UNETR.vit``) for segmentation.

UNETR's ViT takes the modalities as input channels of one patch projection (12 blocks). The BM-MAE per-modality
projections are stacked along the input-channel axis (so a UNETR token is the sum of the modality tokens; the biases
add up); a Hi-End-MAE projection already has the channels and is copied (the channels chosen by ``modalities``). The
shared sin-cos position embedding is copied for the UNETR grid, and every encoder block maps one to one (norm1, fused
qkv, out_proj, norm2, MLP); the cls token is dropped (UNETR has none, as the Hi-End-MAE authors' loading does). If
the encoder has fewer than 12 blocks the remaining UNETR blocks keep their initialisation (reported in the returned
dict).

MONAI's UNETR fixes 16^3 patches. For 8^3 patches the ViT is rebuilt with patch 8 on the same input and UNETR is
built for twice the input size (so that its decoder gets the same token grid); its last up-sampling (x2) becomes a
stride-1 3^3 convolution, so the output has the input's size. The Hi-End-MAE authors do the same for their patch-12
UNETR (the last transposed convolution replaced by a resize to the input size and a 3^3 convolution).
"""
from __future__ import annotations

import torch

from mae_core.errors import MaeError
from mae_core.layers import sincos_pos_embed


def to_unetr(model, out_channels: int, modalities: list[str] | None = None, img_size: int | None = None,
             feature_size: int = 16, norm_name: str = "instance"):
    """(UNETR with the encoder weights loaded into ``.vit``, report dict)."""
    import torch.nn as nn
    from monai.networks.nets import UNETR, ViT

    c = model.config
    if c.patch_size not in (16, 8):
        raise MaeError(f"UNETR uses 16^3 (or, adapted here, 8^3) patches; this model has patch {c.patch_size} "
                       "(pretrain with --patch-size 16 or 8)")
    if model.encoder.depth > 12:
        raise MaeError(f"UNETR's ViT has 12 blocks; this encoder has {model.encoder.depth}")
    mods = list(modalities or model.modalities)
    for m in mods:
        if m not in model.modalities:
            raise MaeError(f"modality {m!r} is not known to this model (it knows {', '.join(model.modalities)})")
    img_size = img_size or c.img_size
    p = c.patch_size
    if img_size % p:
        raise MaeError(f"UNETR input size {img_size} is not divisible by the patch size {p}")
    kw = dict(hidden_size=c.embed_dim, mlp_dim=int(c.embed_dim * c.mlp_ratio), num_heads=c.num_heads, qkv_bias=True)
    net = UNETR(in_channels=len(mods), out_channels=out_channels, img_size=img_size * 16 // p,
                feature_size=feature_size, norm_name=norm_name, **kw)
    if p != 16:
        net.vit = ViT(in_channels=len(mods), img_size=img_size, patch_size=p, num_layers=12, classification=False,
                      **kw)
        net.decoder2.transp_conv = nn.Conv3d(feature_size * 2, feature_size, kernel_size=3, padding=1)
    vit = net.vit
    grid = tuple(s // p for s in (img_size,) * 3)
    with torch.no_grad():
        pe = vit.patch_embedding
        if isinstance(model.patch_embed, nn.ModuleDict):  # BM-MAE: one projection per modality
            pe.patch_embeddings.weight.copy_(torch.cat([model.patch_embed[m].proj.weight for m in mods], dim=1))
            pe.patch_embeddings.bias.copy_(sum(model.patch_embed[m].proj.bias for m in mods))
        else:  # one projection over the stacked channels
            chans = [model.modalities.index(m) for m in mods]
            pe.patch_embeddings.weight.copy_(model.patch_embed.proj.weight[:, chans])
            pe.patch_embeddings.bias.copy_(model.patch_embed.proj.bias)
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
              "img_size": img_size, "hidden_size": c.embed_dim, "patch_size": p}
    return net, report
