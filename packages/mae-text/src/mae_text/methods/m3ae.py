"""M3AE (Chen et al., Multi-Modal Masked Autoencoders for Medical Vision-and-Language Pre-Training, MICCAI 2022;
reference zhjohnchan/M3AE ``m3ae_module.py``, ``objectives.py``, ``prediction_heads.py``).

* Image tower: a ViT (mae-core patch embedding, fixed sin-cos positions, cls token); text tower: the package's
  WordPiece BERT encoder (:class:`~mae_text.methods.mlm.MLM`'s embeddings and blocks). Each is projected to the
  fusion width and gets a modality-type embedding (text 0, image 1).
* Fusion: ``fusion_depth`` co-attention layers (:class:`mae_core.layers.CoAttentionStack`): per stream
  self-attention, cross-attention to the other stream, MLP; both streams updated from the same layer input.
* Three objectives, each on its own pass through the fusion as in the reference:
  - MLM: whole-word masking of 15 % of the report tokens (80 / 10 / 10), full image; BERT's prediction head on the
    fused text tokens;
  - MIM: 75 % of the patches removed before the image tower (MAE random masking), full report; the image stream
    entering fusion layer ``mim_layer`` (-1: the fusion output) goes through a 4-block transformer decoder
    (mask tokens, sin-cos positions) that predicts the per-patch normalised pixels of the removed patches (MSE);
  - ITM: ``B // 2`` pairs matched, the rest get another sample's image (chosen among samples whose report says
    something else when the batch carries ``key``), at random positions; a linear head on the concatenated
    poolers (tanh(linear) of the text [CLS] and of the image cls) says matched / not matched.
  ``loss = mlm_weight * MLM + mim_weight * MIM + itm_weight * ITM`` (1, 1, 1).

Deviations: pre-norm fusion blocks (the reference's are post-norm BertCrossLayers); the MLM head's output matrix is
tied to the token embedding (the reference's is separate); towers trained from scratch (the reference starts from
CLIP ViT-B/16 and RoBERTa) and one learning rate for every part (the reference multiplies it by 5 for the fusion
and the heads). The image-tower output is the fusion input of the masked image too (unmasked tokens only).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.contract import PretrainedMixin
from mae_core.errors import ConfigError
from mae_core.layers import CoAttentionStack, PatchEmbed, grid_shape, init_weights, patchify, sincos_pos_embed
from mae_core.losses import masked_mse, normalize_patches
from mae_core.masking import MaskInfo, gather_tokens, random_masking, uniform_noise
from mae_core.models.mae import MAEDecoder, ModelOutput, TransformerEncoder

from .mlm import MLM, MLMConfig

POOLS = ("fused", "image", "text")


@dataclass
class M3AEConfig:
    tokenizer_json: str = field("", "the WordPiece tokenizer (JSON); set from the data (trained on the reports)")
    vocab_size: int = field(2000, "vocabulary size of the WordPiece tokenizer trained on the reports")
    max_len: int = field(40, "report tokens including [CLS] and [SEP] (the reference pretrains with 64)")
    img_size: int = field(32, "image side (set from the data)")
    in_chans: int = field(1, "image channels (set from the data)")
    patch_size: int = field(4, "ViT patch side")
    embed_dim: int = field(64, "width of both towers and of the fusion layers")
    vision_depth: int = field(2, "image-tower (ViT) blocks", ge=1)
    text_depth: int = field(2, "text-tower (BERT) blocks", ge=1)
    fusion_depth: int = field(2, "co-attention fusion layers (the reference's num_top_layer, 6)", ge=1)
    num_heads: int = field(4, "attention heads")
    mlp_ratio: float = field(4.0, "MLP hidden size / width")
    mlm_ratio: float = field(0.15, "fraction of the report tokens masked for MLM (whole words)", gt=0, lt=1)
    mim_ratio: float = field(0.75, "fraction of the image patches removed for MIM", ge=0, lt=1)
    mim_layer: int = field(1, "MIM reads the image stream entering this fusion layer (0 = before fusion, -1 = the "
                              "fusion output); the reference takes layer 3 of 6", ge=-1)
    decoder_embed_dim: int = field(32, "MIM decoder width (reference 384 for a 768 model)")
    decoder_depth: int = field(4, "MIM decoder blocks", ge=1)
    decoder_num_heads: int = field(2, "MIM decoder heads")
    norm_pix_loss: bool = field(True, "MIM target: per-patch normalised pixels")
    mlm_weight: float = field(1.0, "weight of masked language modelling", ge=0)
    mim_weight: float = field(1.0, "weight of masked image modelling (0 = the MLM + ITM arm)", ge=0)
    itm_weight: float = field(1.0, "weight of image-text matching", ge=0)


class Pooler(nn.Module):
    """tanh(linear(first token)), BERT's pooler (the reference's ``Pooler``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))


class M3AE(PretrainedMixin, nn.Module):
    method_name = "m3ae"
    mask_schedule_refused = "M3AE masks the report and the image with their own ratios (mlm_ratio, mim_ratio)"

    def __init__(self, cfg: M3AEConfig):
        super().__init__()
        d = cfg.embed_dim
        for name, w, h in (("embed_dim", d, cfg.num_heads),
                           ("decoder_embed_dim", cfg.decoder_embed_dim, cfg.decoder_num_heads)):
            if w % h:
                raise ConfigError(f"model.{name} {w} is not divisible by its heads {h}")
        if not -1 <= cfg.mim_layer < cfg.fusion_depth:
            raise ConfigError(f"model.mim_layer {cfg.mim_layer} must be -1 or in [0, {cfg.fusion_depth}) "
                              f"(model.fusion_depth {cfg.fusion_depth})")
        self.config = cfg
        self.grid = grid_shape((cfg.img_size, cfg.img_size), cfg.patch_size)
        self.text = MLM(MLMConfig(tokenizer_json=cfg.tokenizer_json, vocab_size=cfg.vocab_size, max_len=cfg.max_len,
                                  embed_dim=d, depth=cfg.text_depth, num_heads=cfg.num_heads,
                                  mlp_ratio=cfg.mlp_ratio, mask_ratio=cfg.mlm_ratio))
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, d)
        self.register_buffer("pos_embed", sincos_pos_embed(d, self.grid)[None], persistent=False)
        self.vision = TransformerEncoder(d, cfg.vision_depth, cfg.num_heads, mlp_ratio=cfg.mlp_ratio)
        self.text_proj, self.image_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.type_embed = nn.Embedding(2, d)
        self.fusion = CoAttentionStack(cfg.fusion_depth, d, cfg.num_heads, mlp_ratio=cfg.mlp_ratio)
        self.text_pool, self.image_pool = Pooler(d), Pooler(d)
        self.itm_head = nn.Linear(2 * d, 2)
        pred_dim = cfg.patch_size ** 2 * cfg.in_chans
        self.decoder = MAEDecoder(d, cfg.decoder_embed_dim, cfg.decoder_depth, cfg.decoder_num_heads, pred_dim,
                                  pos_embed=sincos_pos_embed(cfg.decoder_embed_dim, self.grid),
                                  mlp_ratio=cfg.mlp_ratio)
        for m in (self.patch_embed, self.vision, self.text_proj, self.image_proj, self.fusion, self.text_pool,
                  self.image_pool, self.itm_head, self.decoder):
            m.apply(init_weights)
        nn.init.normal_(self.type_embed.weight, std=0.02)

    @property
    def tokenizer(self):
        return self.text.tokenizer

    # ---- towers and fusion -----------------------------------------------------------------------------------------
    def image_tower(self, images: torch.Tensor, mask: MaskInfo | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1 + kept patches, D): the patches ``mask`` keeps (all without one) + positions."""
        x, pos = self.patch_embed(images), self.pos_embed.expand(images.shape[0], -1, -1)
        if mask is not None:
            x, pos = gather_tokens(x, mask.ids_keep), gather_tokens(pos, mask.ids_keep)
        return self.vision(x, pos)

    def text_tower(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text.run_encoder(ids, attention_mask)

    def fuse(self, text: torch.Tensor, attention_mask: torch.Tensor, image: torch.Tensor,
             return_hidden: bool = False):
        """Unimodal features -> fused ``(text, image)`` (and every fusion layer's input with ``return_hidden``)."""
        x = self.text_proj(text) + self.type_embed.weight[0]
        y = self.image_proj(image) + self.type_embed.weight[1]
        return self.fusion(x, y, mask_a=attention_mask, return_hidden=return_hidden)

    def pooled(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The reference's ``multi_modal_cls_feats``: [text pooler, image pooler] (B, 2D)."""
        return torch.cat([self.text_pool(text), self.image_pool(image)], dim=-1)

    # ---- the three objectives ----------------------------------------------------------------------------------------
    def itm_pairs(self, batch: dict, b: int, generator=None, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(labels (B,) 1 = matched, image index (B,)): ``B // 2`` matched at random positions; each other row takes
        the image of another sample, one whose ``key`` differs when the batch has keys and such a sample exists."""
        order = uniform_noise((b,), generator, device).argsort()
        labels = torch.zeros(b, dtype=torch.long, device=device)
        labels[order[: b // 2]] = 1
        if b < 2:
            return torch.ones_like(labels), torch.arange(b, device=device)
        bad = torch.eye(b, dtype=torch.bool, device=device)
        if batch.get("key") is not None:
            key = torch.as_tensor(batch["key"], device=device)
            same = (key[:, None] == key[None]) | bad
            bad = torch.where(same.all(1, keepdim=True), bad, same)
        scores = uniform_noise((b, b), generator, device).masked_fill(bad, 2.0)
        other = scores.argmin(1)
        return labels, torch.where(labels.bool(), torch.arange(b, device=device), other)

    def mim_target(self, images: torch.Tensor) -> torch.Tensor:
        target = patchify(images, self.config.patch_size)
        return normalize_patches(target) if self.config.norm_pix_loss else target

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        cfg = self.config
        images = batch["image"].to(self.pos_embed.device)
        enc = self.text.tokenize_text(batch)
        b, dev = images.shape[0], images.device
        zero = images.new_zeros(())
        metrics, extra, losses = {}, {}, []
        text_full = image_full = None
        if cfg.mlm_weight > 0:
            masks = self.text.draw_masks(enc, generator)
            image_full = self.image_tower(images)
            t, _ = self.fuse(self.text_tower(masks["enc_in"], enc.attention_mask), enc.attention_mask, image_full)
            mlm = self.text.mlm_loss(t, enc.input_ids, masks["enc_mask"])
            losses.append(cfg.mlm_weight * mlm)
            metrics["mlm"], extra["mlm_mask"] = float(mlm.detach()), masks["enc_mask"]
            extra["mlm_text"], extra["mlm_input"] = t, masks["enc_in"]
        if cfg.mim_weight > 0 or cfg.itm_weight > 0:
            text_full = self.text_tower(enc.input_ids, enc.attention_mask)
        mim_mask = pred = target = None
        if cfg.mim_weight > 0:
            mim_mask = random_masking(b, self.grid[0] * self.grid[1], cfg.mim_ratio, generator, dev)
            _, v, hidden = self.fuse(text_full, enc.attention_mask, self.image_tower(images, mim_mask), True)
            feats = v if cfg.mim_layer < 0 else hidden[cfg.mim_layer][1]
            pred = self.decoder(feats, mim_mask.ids_restore)
            target = self.mim_target(images)
            mim = masked_mse(pred, target, mim_mask.mask)
            losses.append(cfg.mim_weight * mim)
            metrics["mim"], extra["mim_features"] = float(mim.detach()), feats
        if cfg.itm_weight > 0:
            labels, idx = self.itm_pairs(batch, b, generator, dev)
            image_full = self.image_tower(images) if image_full is None else image_full
            t, v = self.fuse(text_full, enc.attention_mask, image_full[idx])
            logits = self.itm_head(self.pooled(t, v))
            itm = F.cross_entropy(logits.float(), labels)
            losses.append(cfg.itm_weight * itm)
            metrics["itm"] = float(itm.detach())
            metrics["itm_acc"] = float((logits.argmax(1) == labels).float().mean())
            extra["itm_labels"], extra["itm_images"] = labels, idx
        loss = sum(losses) if losses else zero
        return ModelOutput(loss=loss, pred=pred, mask=None if mim_mask is None else mim_mask.mask, target=target,
                           metrics=metrics, extra=extra)

    # ---- downstream --------------------------------------------------------------------------------------------------
    def fused(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused (text, image) tokens of the unmasked pairs."""
        enc = self.text.tokenize_text(batch)
        images = batch["image"].to(self.pos_embed.device)
        return self.fuse(self.text_tower(enc.input_ids, enc.attention_mask), enc.attention_mask,
                         self.image_tower(images))

    def itm_scores(self, batch: dict) -> torch.Tensor:
        """(B,) log-odds that each (image, text) pair matches."""
        logits = self.itm_head(self.pooled(*self.fused(batch)))
        return logits[:, 1] - logits[:, 0]

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """``fused`` (default): the pooled fused pair (B, 2D), the features the reference's VQA / classification
        heads read; ``image``: the image tower's cls token; ``text``: the text tower's [CLS]."""
        pool = pool or "fused"
        if pool == "fused":
            return self.pooled(*self.fused(batch))
        if pool == "image":
            return self.image_tower(batch["image"].to(self.pos_embed.device))[:, 0]
        if pool == "text":
            enc = self.text.tokenize_text(batch)
            return self.text_tower(enc.input_ids, enc.attention_mask)[:, 0]
        raise ConfigError(f"unknown pool {pool!r} for m3ae; choose from {', '.join(POOLS)}")

    def forward_features(self, batch: dict) -> torch.Tensor:
        return torch.cat(self.fused(batch), dim=1)

    def feature_dim(self, pool: str | None = None) -> int:
        return self.config.embed_dim * (2 if (pool or "fused") == "fused" else 1)

    def num_layers(self) -> int:
        c = self.config
        return max(c.vision_depth, c.text_depth) + c.fusion_depth + 1

    def layer_id(self, name: str) -> int:
        """Embeddings 0; block i of either tower i + 1; fusion layer j after the deeper tower; heads last."""
        c = self.config
        towers = max(c.vision_depth, c.text_depth)
        if name.startswith(("vision.blocks.", "text.encoder.blocks.")):
            return int(name.split(".")[2 if name.startswith("vision") else 3]) + 1
        if name.startswith(("patch_embed", "vision.cls_token", "text.tok_embed", "text.pos_embed",
                            "text.embed_norm")):
            return 0
        if name.startswith(("vision.norm", "text.encoder.norm", "text_proj", "image_proj", "type_embed")):
            return towers
        if name.startswith("fusion.layers."):
            return towers + int(name.split(".")[2]) + 1
        return self.num_layers()


def adapt_m3ae(model_cfg: M3AEConfig, data_cfg, dataset) -> M3AEConfig:
    """The tokenizer of the text methods (trained on the reports unless the model has one), and the image size and
    channels of the data."""
    import dataclasses

    from ..commands import adapt_text

    cfg = adapt_text(model_cfg, data_cfg, dataset)
    size = getattr(data_cfg, "image_size", cfg.img_size)
    chans = getattr(dataset, "in_chans", getattr(data_cfg, "in_chans", cfg.in_chans))
    return dataclasses.replace(cfg, img_size=size, in_chans=chans)
