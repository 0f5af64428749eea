"""I2P-MAE (Zhang et al., "Learning 3D Representations from 2D Pre-trained Models via Image-to-Point Masked
Autoencoders", CVPR 2023; ``ZrrSkywalker/I2P-MAE``, ``models/I2P_MAE.py``, ``cfgs/pre-training/i2p-mae.yaml``).

    cloud --three views (mae_3d.project: axis permutations, splatted summed depth, sigmoid)--> 3 depth maps
    depth maps --frozen 2-D ViT (an image MAE trained by the library on depth maps of the embedded shapes)-->
        per-view patch features (final normed tokens) and the last block's cls attention (mean over heads)
    back-projection: each map resized bicubically to the image size and read at a point's own pixel
    2-D-guided masking: saliency of a group = the cls attention at its centre's pixel, mean over the views; the
        visible int((1 - 0.8) G) groups drawn without replacement from softmax(saliency) (mae_core.masking
        .saliency_masking, the trainer's generator)
    visible groups --mini-PointNet + encoder--> decoder (mask tokens, positions before every block, final norm)
    loss = Chamfer-L2 of the masked groups' points (3-D head)
         + MSE of the visible groups' 2-D head to the back-projected features of their M points in the 3 views

Deviations (docs/benchmarks/3d.md, section 7): one token scale (Point-MAE's G groups of M points, its encoder and
decoder) instead of the reference's three-scale hierarchy (512 / 256 / 64 groups, token merging, local attention,
feature propagation); the reconstruction and the 2-D targets therefore sit on the one scale. The 2-D model is a
small image MAE on one-channel 32 px depth maps (the reference: CLIP ViT-B/16 on 224 px maps, three copies of the
channel). ``--no-guided`` (random masking) and ``--no-target-2d`` (Chamfer only) are the ablations.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.checkpoint import WEIGHTS, read_config
from mae_core.config import field
from mae_core.errors import MaeError
from mae_core.masking import MaskInfo, gather_tokens, mask_from_mask, restore_tokens, saliency_masking
from mae_core.models.image_mae import ImageMAE, ImageMAEConfig
from mae_core.models.mae import ModelOutput
from mae_core.teacher import FrozenTeacher, cached_pretrain

from ..project import back_project, depth_input, project_views
from .point_mae import PointDecoder, PointMAE, PointMAEConfig, num_masked, scale_translate

# the 2-D teacher's fields copied from its config.json when it is a run (the student's 2-D head follows its width)
TEACHER_FIELDS = {"teacher_embed_dim": "embed_dim", "teacher_depth": "depth", "teacher_num_heads": "num_heads",
                  "teacher_patch_size": "patch_size", "img_size": "img_size"}


@dataclass
class I2PMAEConfig(PointMAEConfig):
    mask_ratio: float = field(0.8, "fraction of groups hidden from the encoder (paper: 0.8)")
    guided: bool = field(True, "2-D-guided masking: visible groups drawn from softmax of the back-projected 2-D "
                               "saliency; --no-guided: uniformly random (the ablation)")
    target_2d: bool = field(True, "MSE of the visible tokens to the back-projected 2-D features; --no-target-2d: "
                                  "Chamfer only (the ablation)")
    saliency_scale: float = field(1.0, "saliency multiplied by this before the softmax (reference: 1, the raw "
                                       "attention probabilities, a nearly uniform softmax)", ge=0)
    img_size: int = field(32, "depth-map side in pixels (copied from the 2-D teacher; paper: 224)", ge=8)
    splat: int = field(1, "each point drawn on the (2 r + 1)^2 pixels around it (paper: 2 at 224 px)", ge=0)
    teacher: str = field("", "the frozen 2-D ViT: an image-mae run directory; empty: an image MAE trained once on "
                             "depth maps of the embedded shapes (shapes3d-depth) and cached under runs/teachers; "
                             "'random': random weights (control)")
    teacher_sha256: str = field("", "sha256 of the teacher's weights (filled when the teacher is first seen)")
    teacher_embed_dim: int = field(128, "2-D teacher width (copied from its config)", ge=1)
    teacher_depth: int = field(4, "2-D teacher blocks (copied from its config)", ge=1)
    teacher_num_heads: int = field(4, "2-D teacher heads (copied from its config)", ge=1)
    teacher_patch_size: int = field(4, "2-D teacher patch side (copied from its config)", ge=1)
    teacher_epochs: int = field(10, "epochs of the default 2-D teacher when it has to be trained", ge=1)


def teacher_config(c: I2PMAEConfig) -> ImageMAEConfig:
    return ImageMAEConfig(img_size=c.img_size, patch_size=c.teacher_patch_size, in_chans=1,
                          embed_dim=c.teacher_embed_dim, depth=c.teacher_depth, num_heads=c.teacher_num_heads,
                          decoder_embed_dim=c.teacher_embed_dim, decoder_depth=1,
                          decoder_num_heads=c.teacher_num_heads)


def load_2d_teacher(c: I2PMAEConfig) -> FrozenTeacher | None:
    """The frozen 2-D ViT named by ``c.teacher`` (its widths copied into ``c``); None when not needed or gone."""
    if not (c.guided or c.target_2d) or not c.teacher:
        return None
    if c.teacher == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return FrozenTeacher(ImageMAE(teacher_config(c)), source="random")
    path = Path(c.teacher)
    path = path.parent if path.name == WEIGHTS else path
    if not (path / WEIGHTS).exists():
        if c.teacher_sha256:  # a saved student whose teacher is gone: downstream use needs none
            return None
        raise MaeError(f"{c.teacher}: 2-D teacher not found (--teacher)")
    saved = read_config(path)
    tc = saved.get("config", {})
    if saved.get("method") != "image-mae" or tc.get("in_chans") != 1:
        raise MaeError(f"{c.teacher}: the 2-D teacher must be a one-channel image-mae run (depth maps), got "
                       f"{saved.get('method')!r} with {tc.get('in_chans')} channels (--teacher)")
    for ours, theirs in TEACHER_FIELDS.items():
        setattr(c, ours, int(tc[theirs]))
    return FrozenTeacher.from_config(c)


class I2PDecoder(PointDecoder):
    """Point-MAE's decoder with a second head: the back-projected 2-D features of the group's M points in the 3
    views (the reference's ``rec_head_2d``); returns (3-D prediction (B, G, 3M), 2-D prediction or None)."""

    def __init__(self, *args, out_2d: int = 0, **kw):
        super().__init__(*args, **kw)
        self.head_2d = nn.Linear(self.head.in_features, out_2d) if out_2d else None

    def forward(self, latent, centers, ids_restore, ids_2d=None):
        """``ids_2d`` (B, K): the tokens the 2-D head is applied to (the visible ones; all when None)."""
        x = restore_tokens(self.embed(latent), self.mask_token, ids_restore)
        x = self.blocks(x, self.pos(centers))
        if self.head_2d is None:
            return self.head(x), None
        return self.head(x), self.head_2d(x if ids_2d is None else gather_tokens(x, ids_2d))


class I2PMAE(PointMAE):
    method_name = "i2p-mae"

    def __init__(self, config: I2PMAEConfig):
        teacher = load_2d_teacher(config)  # copies the teacher's widths into the config first
        super().__init__(config)
        self.teacher = teacher

    def build_decoder(self) -> None:
        c = self.config
        out_2d = c.group_size * 3 * c.teacher_embed_dim if c.target_2d else 0
        self.decoder = I2PDecoder(c.embed_dim, c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads,
                                  c.group_size, c.mlp_ratio, out_2d=out_2d)

    def views_2d(self, pts: torch.Tensor):
        """(features (3, B, D, h, w), saliency (3, B, 1, h, w), frames) of the frozen 2-D ViT on the 3 depth maps."""
        if self.teacher is None:
            raise MaeError("i2p-mae: no 2-D teacher (give --teacher RUN or random, train through mae-3d pretrain so "
                           "that the default one is trained, or --no-guided --no-target-2d)")
        c = self.config
        imgs, frames = project_views(pts, c.img_size, c.splat)
        v, b = imgs.shape[:2]
        out = self.teacher({"image": depth_input(imgs.flatten(0, 1))}, attention=[-1])
        h = c.img_size // c.teacher_patch_size
        feats = out.last[:, out.num_prefix_tokens:].transpose(1, 2).reshape(v, b, -1, h, h)
        sal = out.cls_attention[0].mean(1).reshape(v, b, 1, h, h)
        return feats.float(), sal.float(), frames

    def guided_mask(self, sal, frames, centers, generator=None) -> tuple[MaskInfo, torch.Tensor]:
        """Visible groups drawn without replacement from softmax(scale x saliency at each centre, mean of views)."""
        c = self.config
        g = centers.shape[1]
        spatial = back_project(centers, sal, frames).mean(0)[..., 0]  # (B, G)
        return saliency_masking(c.saliency_scale * spatial, g - num_masked(g, self.mask_ratio), generator), spatial

    def target_features(self, feats, frames, neighborhood, centers) -> torch.Tensor:
        """(B, G, M * 3 * D): the 2-D features at each group point's pixel, views concatenated per point."""
        b, g, m, _ = neighborhood.shape
        pts = (neighborhood + centers[:, :, None]).reshape(b, g * m, 3)  # absolute coordinates
        t = back_project(pts, feats, frames)  # (3, B, G M, D)
        return t.permute(1, 2, 0, 3).reshape(b, g, -1)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        c = self.config
        pts = self.points(batch)
        if self.training and c.augment:
            pts = scale_translate(pts, generator)
        neighborhood, centers = self.group(pts)
        external = batch.get("mask") is not None
        need_2d = c.target_2d or (c.guided and not external)
        feats, sal, frames = self.views_2d(pts) if need_2d else (None, None, None)
        metrics = {}
        if external:
            mask = mask_from_mask(batch["mask"].to(centers.device))
        elif c.guided:
            mask, spatial = self.guided_mask(sal, frames, centers, generator)
            p = torch.softmax(c.saliency_scale * spatial, 1)
            metrics["saliency_pmax"] = p.amax(1).mean().detach() * p.shape[1]  # 1 = uniform
        else:
            mask = self.mask_groups(centers, generator)
        latent = self.encode_visible(neighborhood, centers, mask)
        pred, pred_2d = self.decoder(latent, centers, mask.ids_restore, mask.ids_keep)  # 2-D head: visible only
        loss_3d = self.reconstruction_loss(pred, neighborhood, mask)
        loss, metrics["loss_3d"] = loss_3d, loss_3d.detach()
        if c.target_2d:
            target = self.target_features(feats, frames, neighborhood, centers)
            loss_2d = F.mse_loss(pred_2d, gather_tokens(target, mask.ids_keep))
            loss, metrics["loss_2d"] = loss + loss_2d, loss_2d.detach()
        return ModelOutput(loss=loss, pred=pred, mask=mask.mask, target=neighborhood.flatten(2), metrics=metrics,
                           extra={"centers": centers})

    def layer_id(self, name: str) -> int:
        return self.num_layers() if name.startswith("decoder.head_2d") else super().layer_id(name)


def default_2d_teacher(cfg: I2PMAEConfig, data_cfg) -> Path:
    """An image MAE (``teacher_*`` widths) trained once by :func:`mae_core.teacher.cached_pretrain` on the depth
    maps of the embedded training shapes (``shapes3d-depth`` at the student's point count, written to an ``.npz``
    that core's ``image-array`` reads)."""
    import mae_core.image  # noqa: F401  (registers core's image-array dataset and image-mae)
    from mae_core.data.arrays import ArrayImageConfig

    from ..data.depth import ShapesDepthConfig, depth_npz

    depth = ShapesDepthConfig(num_points=getattr(data_cfg, "num_points", 512), image_size=cfg.img_size,
                              splat=cfg.splat)
    images = ArrayImageConfig(path=str(depth_npz(depth)), image_size=cfg.img_size)
    options = {"embed_dim": cfg.teacher_embed_dim, "depth": cfg.teacher_depth, "num_heads": cfg.teacher_num_heads,
               "patch_size": cfg.teacher_patch_size, "decoder_embed_dim": 96, "decoder_depth": 1,
               "decoder_num_heads": 4, "epochs": cfg.teacher_epochs, "batch_size": 128}
    return cached_pretrain("image-mae", images, options, prefix="i2p-2d", what="2-D depth-map teacher")


def adapt_i2p(model_cfg: I2PMAEConfig, data_cfg, dataset) -> I2PMAEConfig:
    """Fewer groups for small clouds (as point-mae); without ``--teacher`` (and when a 2-D part is on), the default
    2-D teacher."""
    from .. import adapt_points

    cfg = adapt_points(model_cfg, data_cfg, dataset)
    if not cfg.teacher and (cfg.guided or cfg.target_2d):
        cfg = dataclasses.replace(cfg, teacher=str(default_2d_teacher(cfg, data_cfg)), teacher_sha256="")
    return cfg
