"""TokenUnify (Chen et al., "TokenUnify: Scaling Up Autoregressive Pretraining for Neuron Segmentation", ICCV 2025;
reference code ydchen0806/TokenUnify: ``src/segmamba_ar.py``, ``src/segmamba.py``,
``dataloader/data_provider_pretraining.py``, ``dataloader/data_provider_pretraining_autoregress.py``).

Patch tokens in raster order over the image grid; the network sees every token, corrupted in place, and predicts
the clean pixels. Two stages, run one after the other:

- **stage 1, random token prediction** (``cover_image_with_patches``, ``fill_mode=1``, ``mask_ratio=0.4``):
  ``int(L * 0.4)`` tokens chosen uniformly without replacement are replaced by standard Gaussian noise; the loss is
  the MSE over the whole input (every token, corrupted or not).
- **stage 2, next-all + next-token** (``preserve_patches_and_fill_rest``, ``fill_nose=1``; ``SegMamba.forward``,
  ``auto_mode=1``): a prefix of ``k`` tokens is kept, ``k`` uniform in ``[1, L - 1]``, and every later token is
  filled with Gaussian noise. Loss = MSE over every token (next-all) + MSE of a next-token head's prediction of
  token ``k`` (the first filled one), weighted 1:1. The network starts from a stage-1 run (``init``).

The reference backbone is a Mamba U-Net (SegMamba); here the image MAE's ViT (same width, depth and patch, no cls
token) with two linear heads. Next-all reads a bidirectional pass over the corrupted tokens; the next-token head
reads a second pass of the same encoder under a causal attention mask, at position ``k - 1``, so its prediction
depends on tokens ``0..k-1`` only (the reference's head reads the whole output map, where everything after the
prefix is noise). Targets are the data's normalised pixels and the heads are linear (the reference: images in
[0, 1], sigmoid outputs).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import field
from ..errors import ConfigError, MaeError
from ..layers import PatchEmbed2d, grid_shape, patchify, sincos_pos_embed
from ..masking import mask_from_scores, uniform_noise
from ..teacher import FrozenTeacher, cached_pretrain
from .latent_ae import gaussian_noise
from .mae import MaskedAutoencoder, ModelOutput, TransformerEncoder


@dataclass
class TokenUnifyConfig:
    img_size: int = field(32, "input image side in pixels")
    patch_size: int = field(4, "patch (token) side in pixels")
    in_chans: int = field(1, "number of image channels")
    embed_dim: int = field(128, "encoder width")
    depth: int = field(4, "encoder blocks")
    num_heads: int = field(4, "encoder attention heads")
    mlp_ratio: float = field(4.0, "MLP hidden width / block width")
    drop_path: float = field(0.0, "stochastic depth rate of the encoder (used when fine-tuning)")
    stage: int = field(2, "1: random token prediction; 2: next-all + next-token from a random-length prefix, "
                          "initialised from a stage-1 run", choices=[1, 2])
    mask_ratio: float = field(0.4, "stage 1: fraction of the tokens replaced by noise (int(L x ratio) of them)",
                              ge=0, lt=1)
    next_all_weight: float = field(1.0, "stage 2: weight of the MSE over every token", ge=0)
    next_token_weight: float = field(1.0, "stage 2: weight of the next-token head's MSE", ge=0)
    init: str = field("", "stage 2: the stage-1 run it starts from (a tokenunify run or save_pretrained directory); "
                          "empty: the default stage-1 run for the data (trained once, cached under runs/teachers); "
                          "'none': random weights (stage 2 alone)")
    init_sha256: str = field("", "sha256 of the init weights (filled when they are first loaded)")
    stage1_epochs: int = field(10, "epochs of the default stage-1 run when it has to be trained", ge=1)

    def validate(self, where: str = "config") -> None:
        if self.img_size % self.patch_size:
            raise ConfigError(f"{where}.patch_size: {self.patch_size} does not divide the image side {self.img_size}")
        if (self.img_size // self.patch_size) ** 2 < 2:
            raise ConfigError(f"{where}.patch_size: a {self.img_size} px image needs at least 2 tokens")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"{where}: num_heads ({self.num_heads}) must divide embed_dim ({self.embed_dim})")


# ---- the two corruptions (pure functions of the tokens and the generator) -----------------------------------------------
def random_token_noise(tokens: torch.Tensor, ratio: float, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1: ``int(L * ratio)`` tokens per sample, uniform without replacement, replaced by N(0, 1) noise.
    Returns (corrupted tokens, mask (B, L), 1 = replaced)."""
    b, length, _ = tokens.shape
    n = int(length * ratio)
    mask = mask_from_scores(uniform_noise((b, length), generator, tokens.device), length - n).mask
    noise = gaussian_noise(tokens.shape, generator, tokens.device).to(tokens.dtype)
    return torch.where(mask[..., None].bool(), noise, tokens), mask


def prefix_noise_fill(tokens: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2: keep the first ``k`` tokens, ``k`` uniform in ``[1, L - 1]`` per sample (``np.random.randint(1,
    L)``), fill the rest with N(0, 1) noise. Returns (corrupted tokens, k (B,) long)."""
    b, length, _ = tokens.shape
    k = 1 + (uniform_noise((b,), generator, tokens.device) * (length - 1)).long().clamp_max(length - 2)
    keep = torch.arange(length, device=tokens.device)[None] < k[:, None]
    noise = gaussian_noise(tokens.shape, generator, tokens.device).to(tokens.dtype)
    return torch.where(keep[..., None], tokens, noise), k


def causal_mask(length: int, device=None) -> torch.Tensor:
    """(L, L) bool, True = may attend: token i attends to tokens 0..i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


class TokenUnify(MaskedAutoencoder):
    pool = "mean"

    def __init__(self, config: TokenUnifyConfig):
        super().__init__()
        self.config = c = config
        c.validate("tokenunify")
        self.grid = grid_shape((c.img_size, c.img_size), c.patch_size)
        self.patch_embed = PatchEmbed2d(c.patch_size, c.in_chans, c.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.grid)[None], persistent=False)
        self.encoder = TransformerEncoder(c.embed_dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio,
                                          drop_path=c.drop_path, num_prefix_tokens=0)
        pred_dim = c.patch_size**2 * c.in_chans
        self.head_all = nn.Linear(c.embed_dim, pred_dim)  # every token's pixels (random-token / next-all)
        self.head_next = nn.Linear(c.embed_dim, pred_dim) if c.stage == 2 else None  # token k from the causal pass
        self.mask_ratio, self.norm_pix_loss = c.mask_ratio, False
        if c.stage == 2:
            self.mask_schedule_refused = "stage 2 keeps a prefix of random length instead of masking by a ratio"
        self.init_weights()
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if c.stage == 2 and c.init not in ("", "none"):
            self.load_init()

    def load_init(self) -> None:
        """Copy the weights of the stage-1 run ``config.init`` (its path and sha256 recorded; the next-token head,
        which stage 1 lacks, keeps its initialisation)."""
        src = FrozenTeacher.from_config(self.config, field="init").model
        if not isinstance(src, TokenUnify):
            raise MaeError(f"{self.config.init}: not a tokenunify run (it is {type(src).__name__}) (--init)")
        try:
            missing, unexpected = self.load_state_dict(src.state_dict(), strict=False)
        except RuntimeError as e:
            raise MaeError(f"{self.config.init}: weights do not fit this model: {str(e).splitlines()[1].strip()} "
                           "(--init)") from None
        bad = list(unexpected) + [m for m in missing if not m.startswith("head_next.")]
        if bad:
            raise MaeError(f"{self.config.init}: weights do not fit this model ({', '.join(bad[:3])}) (--init)")

    # ---- tokens ------------------------------------------------------------------------------------------------------
    def tokenize(self, batch):
        """Raw pixel patches (B, L, p * p * C) in raster order and the fixed 2-D sin-cos positions."""
        x = batch["image"]
        grid = self.patch_embed.check_input(x)
        pos = self.pos_embed if grid == self.grid else sincos_pos_embed(self.config.embed_dim, grid)[None].to(x.device)
        return patchify(x, self.config.patch_size), pos

    def embed_tokens(self, tokens):
        return self.patch_embed.embed_patches(tokens)

    def target(self, batch):
        return patchify(batch["image"], self.config.patch_size)

    # ---- the two objectives ------------------------------------------------------------------------------------------
    def forward(self, batch, generator=None) -> ModelOutput:
        tokens, pos = self.tokenize(batch)
        target = self.target(batch)
        c = self.config
        if c.stage == 1:
            x, mask = random_token_noise(tokens, self.mask_ratio, generator)
            pred = self.head_all(self.encoder(self.embed_tokens(x), pos))
            loss = F.mse_loss(pred.float(), target.float())
            return ModelOutput(loss=loss, pred=pred, mask=mask, target=target)
        x, k = prefix_noise_fill(tokens, generator)
        emb = self.embed_tokens(x)
        pred = self.head_all(self.encoder(emb, pos))
        next_pred = self.next_token(emb, pos, k)
        rows = torch.arange(len(k), device=k.device)
        loss_all = F.mse_loss(pred.float(), target.float())
        loss_next = F.mse_loss(next_pred.float(), target[rows, k].float())
        loss = c.next_all_weight * loss_all + c.next_token_weight * loss_next
        mask = (torch.arange(tokens.shape[1], device=k.device)[None] >= k[:, None]).float()
        return ModelOutput(loss=loss, pred=pred, mask=mask, target=target,
                           metrics={"next_all": loss_all.detach(), "next_token": loss_next.detach()},
                           extra={"next_pred": next_pred, "k": k})

    def next_token(self, emb: torch.Tensor, pos, k: torch.Tensor) -> torch.Tensor:
        """The next-token head on the causal pass: position ``k - 1`` predicts token ``k``, (B, p * p * C)."""
        hidden = self.encoder(emb, pos, attn_mask=causal_mask(emb.shape[1], emb.device))
        return self.head_next(hidden[torch.arange(len(k), device=k.device), k - 1])

    def layer_id(self, name: str) -> int:
        return self.encoder.depth + 1 if name.startswith("head_") else super().layer_id(name)


def adapt_tokenunify(model_cfg: TokenUnifyConfig, data_cfg, dataset) -> TokenUnifyConfig:
    """The image adapt (size and channels follow the data); stage 2 without ``init``: the default stage-1 run for
    the data, trained once and cached (:func:`mae_core.teacher.cached_pretrain`)."""
    from ..image import adapt_image

    cfg = adapt_image(model_cfg, data_cfg, dataset)
    if cfg.stage == 2 and not cfg.init:
        shape = {k: getattr(cfg, k) for k in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
                                              "mask_ratio")}
        batch = min(64, len(dataset)) if dataset is not None else 64
        recipe = {"stage": 1, **shape, "epochs": cfg.stage1_epochs, "batch_size": batch, "base_lr": 1.5e-3,
                  "warmup_epochs": 1}
        out = cached_pretrain("tokenunify", data_cfg, recipe, prefix="tokenunify-stage1", what="stage-1 TokenUnify")
        cfg = dataclasses.replace(cfg, init=str(out), init_sha256="")
    return cfg


def visualize_tokenunify(model: TokenUnify, dataset, path, num: int = 8, seed: int = 0):
    """original | corrupted tokens (grey) | prediction of every token | prediction pasted on the kept tokens."""
    from ..viz import save_image_reconstruction

    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    images = torch.stack([dataset[i]["image"] for i in idx])
    stage = model.config.stage
    what = f"{model.config.mask_ratio:.0%} of the tokens replaced by noise" if stage == 1 else "a random-length prefix kept, the rest noise"
    return save_image_reconstruction(model.cpu(), images, path, mean=getattr(dataset, "mean", (0.5,) * images.shape[1]),
                                     std=getattr(dataset, "std", (0.5,) * images.shape[1]), seed=seed,
                                     title=f"TokenUnify stage {stage}: {what} (grey in the second column)")
