"""Weights in and out of the libraries users already have, by key mapping (no code from their checkpoints runs).

* ``to_timm(model)``: our image encoder as a timm ``VisionTransformer`` (``mae-core[timm]``), same features.
* ``from_hf_vitmae(hf_model)``: a Hugging Face ``ViTMAEForPreTraining`` (or its state dict + config) as our ImageMAE.
* ``from_mae_release(path)``: the original MAE release format (``mae_pretrain_vit_base.pth`` style keys), loaded with
  ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import re

import torch

from .checkpoint import load_foreign, load_model_state
from .errors import MaeError
from .models.image_mae import ImageMAE, ImageMAEConfig

_BLOCK_KEYS = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
               "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]


# ---- timm --------------------------------------------------------------------------------------------------------------
def timm_state_dict(model: ImageMAE) -> dict[str, torch.Tensor]:
    """Encoder weights under timm ViT names (``cls_token``, ``pos_embed`` with its cls row, ``blocks.i.*``, ``norm``)."""
    sd = {k: v for k, v in model.state_dict().items()}
    out = {"cls_token": sd["encoder.cls_token"], "patch_embed.proj.weight": sd["patch_embed.proj.weight"],
           "patch_embed.proj.bias": sd["patch_embed.proj.bias"],
           "pos_embed": torch.cat([torch.zeros(1, 1, model.config.embed_dim), model.pos_embed.cpu()], dim=1),
           "norm.weight": sd["encoder.norm.weight"], "norm.bias": sd["encoder.norm.bias"]}
    for i in range(model.config.depth):
        for k in _BLOCK_KEYS:
            out[f"blocks.{i}.{k}"] = sd[f"encoder.blocks.{i}.{k}"]
    return {k: v.detach().clone() for k, v in out.items()}


def to_timm(model: ImageMAE, name: str = "vit_small_patch16_224", num_classes: int = 0, **kwargs):
    """A timm ViT carrying our encoder weights; ``forward_features`` matches ``model.forward_features``."""
    try:
        import timm
    except ImportError:
        raise MaeError("timm is not installed: pip install 'mae-core[timm]'") from None
    c = model.config
    vit = timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=c.img_size,
                            patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.embed_dim, depth=c.depth,
                            num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, **kwargs)
    missing, unexpected = vit.load_state_dict(timm_state_dict(model), strict=False)
    missing = [k for k in missing if not k.startswith("head")]
    if missing or unexpected:
        raise MaeError(f"timm model {name!r} does not match our encoder (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]})")
    return vit


# ---- Hugging Face ViTMAE -----------------------------------------------------------------------------------------------
_HF_NAMES = {  # transformers 5.x layout, then the 4.x layout
    "v5": {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "attn.proj": "attention.o_proj",
           "norm1": "layernorm_before", "norm2": "layernorm_after", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"},
    "v4": {"q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value",
           "attn.proj": "attention.output.dense", "norm1": "layernorm_before", "norm2": "layernorm_after",
           "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"},
}


def _hf_layer(prefix: str, sd: dict, our: str, out: dict) -> None:
    names = _HF_NAMES["v5"] if f"{prefix}.attention.q_proj.weight" in sd else _HF_NAMES["v4"]
    for t in ("weight", "bias"):
        out[f"{our}.attn.qkv.{t}"] = torch.cat([sd[f"{prefix}.{names[x]}.{t}"] for x in ("q", "k", "v")])
        for o in ("attn.proj", "norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            out[f"{our}.{o}.{t}"] = sd[f"{prefix}.{names[o]}.{t}"]


def config_from_hf(hf_config) -> ImageMAEConfig:
    g = hf_config.get if isinstance(hf_config, dict) else lambda k, d=None: getattr(hf_config, k, d)
    if g("intermediate_size") / g("hidden_size") != g("decoder_intermediate_size") / g("decoder_hidden_size"):
        raise MaeError("encoder and decoder MLP ratios differ; our decoder uses the encoder's ratio")
    return ImageMAEConfig(img_size=g("image_size"), patch_size=g("patch_size"), in_chans=g("num_channels"),
                          embed_dim=g("hidden_size"), depth=g("num_hidden_layers"), num_heads=g("num_attention_heads"),
                          decoder_embed_dim=g("decoder_hidden_size"), decoder_depth=g("decoder_num_hidden_layers"),
                          decoder_num_heads=g("decoder_num_attention_heads"),
                          mlp_ratio=g("intermediate_size") / g("hidden_size"), mask_ratio=g("mask_ratio"),
                          norm_pix_loss=bool(g("norm_pix_loss")))


def from_hf_vitmae(hf_model=None, state_dict: dict | None = None, hf_config=None) -> ImageMAE:
    """Convert ``ViTMAEForPreTraining`` weights (a model, or a state dict + its config) into our ImageMAE."""
    if hf_model is not None:
        state_dict, hf_config = hf_model.state_dict(), hf_model.config
    if state_dict is None or hf_config is None:
        raise MaeError("from_hf_vitmae needs a model, or a state dict and its config")
    cfg = config_from_hf(hf_config)
    sd = state_dict
    out = {"encoder.cls_token": sd["vit.embeddings.cls_token"],
           "patch_embed.proj.weight": sd["vit.embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["vit.embeddings.patch_embeddings.projection.bias"],
           "encoder.norm.weight": sd["vit.layernorm.weight"], "encoder.norm.bias": sd["vit.layernorm.bias"],
           "decoder.embed.weight": sd["decoder.decoder_embed.weight"], "decoder.embed.bias": sd["decoder.decoder_embed.bias"],
           "decoder.mask_token": sd["decoder.mask_token"],
           "decoder.norm.weight": sd["decoder.decoder_norm.weight"], "decoder.norm.bias": sd["decoder.decoder_norm.bias"],
           "decoder.pred.weight": sd["decoder.decoder_pred.weight"], "decoder.pred.bias": sd["decoder.decoder_pred.bias"]}
    enc = "vit.layers" if "vit.layers.0.layernorm_before.weight" in sd else "vit.encoder.layer"
    for i in range(cfg.depth):
        _hf_layer(f"{enc}.{i}", sd, f"encoder.blocks.{i}", out)
    for i in range(cfg.decoder_depth):
        _hf_layer(f"decoder.decoder_layers.{i}", sd, f"decoder.blocks.{i}", out)
    model = ImageMAE(cfg)
    model.method_name = "image-mae"
    load_model_state(model, out, source="Hugging Face ViTMAE weights")
    _check_fixed_pos(model, sd.get("vit.embeddings.position_embeddings"), "vit.embeddings.position_embeddings")
    _check_fixed_pos(model, sd.get("decoder.decoder_pos_embed"), "decoder.decoder_pos_embed", decoder=True)
    return model


def _check_fixed_pos(model: ImageMAE, pos, key: str, decoder: bool = False) -> None:
    """Both libraries use fixed sin-cos tables; refuse weights whose table differs (learned or another grid). An
    all-zero table (a freshly built transformers 5 ``ViTMAEForPreTraining`` holds zeros until it is filled) is
    replaced by the sin-cos table of the grid: the model keeps its own ``sincos_pos_embed`` buffer."""
    if pos is None or not bool(pos.any()):
        return
    ours = (model.decoder.pos_embed if decoder else model.pos_embed).cpu()
    theirs = pos[:, 1:] if pos.shape[1] == ours.shape[1] + 1 else pos
    if theirs.shape != ours.shape or not torch.allclose(theirs.float(), ours, atol=1e-4):
        raise MaeError(f"{key}: position embedding is not the fixed sin-cos table of a {model.grid} grid")


# ---- the original MAE release ------------------------------------------------------------------------------------------
def from_mae_release(path_or_state, num_heads: int | None = None, decoder_num_heads: int = 16,
                     img_size: int = 224, norm_pix_loss: bool = True) -> ImageMAE:
    """Load ``facebookresearch/mae`` weights (``{"model": state}``; keys ``blocks.*``, ``decoder_blocks.*``).

    Sizes are read from the tensors; head counts are not stored, so they default to width / 64 for the encoder (as
    in ViT-S/B/L/H) and 16 for the decoder (the paper's decoder)."""
    sd = path_or_state if isinstance(path_or_state, dict) else load_foreign(path_or_state)
    src = "" if isinstance(path_or_state, dict) else f"{path_or_state}: "
    try:
        w = sd["patch_embed.proj.weight"]
    except KeyError:
        raise MaeError(f"{src}not an MAE checkpoint (no 'patch_embed.proj.weight')") from None
    embed_dim, in_chans, patch = w.shape[0], w.shape[1], w.shape[2]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    has_dec = "decoder_embed.weight" in sd
    dec_dim = sd["decoder_embed.weight"].shape[0] if has_dec else 128
    dec_depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"decoder_blocks\.(\d+)\.", k))) \
        if has_dec else 1
    cfg = ImageMAEConfig(img_size=img_size, patch_size=patch, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
                         num_heads=num_heads or max(1, embed_dim // 64), decoder_embed_dim=dec_dim,
                         decoder_depth=dec_depth, decoder_num_heads=decoder_num_heads,
                         mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim, norm_pix_loss=norm_pix_loss)
    out = {"encoder.cls_token": sd["cls_token"], "patch_embed.proj.weight": w,
           "patch_embed.proj.bias": sd["patch_embed.proj.bias"],
           "encoder.norm.weight": sd["norm.weight"], "encoder.norm.bias": sd["norm.bias"]}
    for i in range(depth):
        for k in _BLOCK_KEYS:
            out[f"encoder.blocks.{i}.{k}"] = sd[f"blocks.{i}.{k}"]
    model = ImageMAE(cfg)
    model.method_name = "image-mae"
    if has_dec:
        out.update({"decoder.embed.weight": sd["decoder_embed.weight"], "decoder.embed.bias": sd["decoder_embed.bias"],
                    "decoder.mask_token": sd["mask_token"], "decoder.norm.weight": sd["decoder_norm.weight"],
                    "decoder.norm.bias": sd["decoder_norm.bias"], "decoder.pred.weight": sd["decoder_pred.weight"],
                    "decoder.pred.bias": sd["decoder_pred.bias"]})
        for i in range(dec_depth):
            for k in _BLOCK_KEYS:
                out[f"decoder.blocks.{i}.{k}"] = sd[f"decoder_blocks.{i}.{k}"]
    load_model_state(model, out, source=f"{src}MAE release weights", strict=has_dec)
    _check_fixed_pos(model, sd.get("pos_embed"), f"{src}pos_embed")
    return model


def to_mae_release(model: ImageMAE) -> dict[str, torch.Tensor]:
    """The inverse of :func:`from_mae_release` (for round trips and for tools that expect that layout)."""
    sd = model.state_dict()
    out = {"cls_token": sd["encoder.cls_token"], "patch_embed.proj.weight": sd["patch_embed.proj.weight"],
           "patch_embed.proj.bias": sd["patch_embed.proj.bias"], "norm.weight": sd["encoder.norm.weight"],
           "norm.bias": sd["encoder.norm.bias"],
           "pos_embed": torch.cat([torch.zeros(1, 1, model.config.embed_dim), model.pos_embed.cpu()], 1),
           "decoder_embed.weight": sd["decoder.embed.weight"], "decoder_embed.bias": sd["decoder.embed.bias"],
           "mask_token": sd["decoder.mask_token"], "decoder_norm.weight": sd["decoder.norm.weight"],
           "decoder_norm.bias": sd["decoder.norm.bias"], "decoder_pred.weight": sd["decoder.pred.weight"],
           "decoder_pred.bias": sd["decoder.pred.bias"]}
    for i in range(model.config.depth):
        for k in _BLOCK_KEYS:
            out[f"blocks.{i}.{k}"] = sd[f"encoder.blocks.{i}.{k}"]
    for i in range(model.config.decoder_depth):
        for k in _BLOCK_KEYS:
            out[f"decoder_blocks.{i}.{k}"] = sd[f"decoder.blocks.{i}.{k}"]
    return {k: v.detach().clone() for k, v in out.items()}
