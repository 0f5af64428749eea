"""mae-3d: masked autoencoders for point clouds and LiDAR on Open3D — Point-MAE, Point-CMAE, Point-BERT (and its dVAE
tokenizer), I2P-MAE, R-MAE and the FastDiT-3D generator.

Importing the package registers its methods, datasets, presets, the ``svm`` probe and the ``fewshot`` / ``segment``
commands with mae-core.
"""
from __future__ import annotations

import dataclasses

from mae_core.eval.probes import register_probe
from mae_core.eval.svm import probe_svm
from mae_core.registry import DatasetSpec, MethodSpec, PresetSpec, register_dataset, register_method, register_preset

from . import commands  # noqa: F401  (registers fewshot)
from . import generate  # noqa: F401  (registers generate)
from .data.lidar import DrivingScenes, DrivingScenesConfig, LidarFolder, LidarFolderConfig
from .data.folder import PointFolderConfig, build_point_data
from .data.depth import ShapesDepth, ShapesDepthConfig
from .data.shapes import Shapes3D, Shapes3DConfig
from .generate import draw_samples
from .methods.fastdit3d import FastDiT3D, FastDiT3DConfig
from .methods.i2p_mae import I2PMAE, I2PMAEConfig, adapt_i2p
from .methods.r_mae import RMAE, RMAEConfig, adapt_grid
from .methods.point_bert import PointBERT, PointBERTConfig, adapt_point_bert
from .methods.point_cmae import PointCMAE, PointCMAEConfig
from .methods.point_dvae import PointDVAE, PointDVAEConfig
from .methods.point_mae import PRESETS as POINT_MAE_PRESETS
from .methods.point_mae import PointMAE, PointMAEConfig
from .viz import draw_lidar_reconstruction, draw_point_reconstruction, draw_point_tokens

__version__ = "0.1.0"


def adapt_points(model_cfg, data_cfg, dataset):
    """Fewer groups when the clouds are small: G and M never exceed the number of points."""
    n = getattr(data_cfg, "num_points", None)
    if n is None:
        return model_cfg
    return dataclasses.replace(model_cfg, num_groups=min(model_cfg.num_groups, n),
                               group_size=min(model_cfg.group_size, n))


_POINT_TINY = {"model": {"num_groups": 8, "group_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 2,
                         "pointnet_dims": [16, 16, 32], "decoder_embed_dim": 32, "decoder_depth": 1,
                         "decoder_num_heads": 2,
                         "drop_path": 0.0},
               "data": {"num_points": 64, "num_classes": 4, "train_per_class": 1, "test_per_class": 1}}
POINT_TRAIN = {"epochs": 6, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 1, "weight_decay": 0.05,
               "log_every": 5}
# the reference fine-tuning model: cls token, [cls, max over groups] -> MLP with BatchNorm (PointMAE.encode)
POINT_FINETUNE = {"pool": "cls+max"}

register_method(MethodSpec(
    name="point-mae", domain="3d", default=True, config_cls=PointMAEConfig, model_cls=PointMAE,
    description="Point-MAE: mini-PointNet group tokens, 60 % of groups masked, Chamfer reconstruction",
    default_dataset="shapes3d", paper="Pang et al., Masked Autoencoders for Point Cloud Self-supervised Learning, "
                                      "ECCV 2022", visualize=draw_point_reconstruction, train_defaults=POINT_TRAIN,
    # the embedded run (222 steps) at lr 3e-4, about the reference's 1e-3 at batch 128 scaled to batch 32: its frozen
    # features gain over a random encoder (linear +4.3 / +4.7 / +7.3, kNN +7.0 / +5.3 / +5.3, seeds 0 / 1 / 2); at
    # 1e-3 +6.0 / +1.3 and -0.3 / -1.7 (docs/benchmarks.md, 3-D rows); a user's clouds keep 1e-3
    default_dataset_train={"lr": 3e-4},
    adapt=adapt_points, tiny=_POINT_TINY, finetune_options=POINT_FINETUNE,
))

register_method(MethodSpec(
    name="point-cmae", domain="3d", config_cls=PointCMAEConfig, model_cls=PointCMAE,
    description="Point-CMAE: two random masks, shared encoder, two decoders, Chamfer + contrastive on tokens "
                "masked in both views",
    default_dataset="shapes3d", paper="Ren et al., Bringing Contrastive Learning to Point Cloud Masked "
                                      "Autoencoders (Point-CMAE), ACCV 2024", visualize=draw_point_reconstruction,
    train_defaults=POINT_TRAIN, adapt=adapt_points, finetune_options=POINT_FINETUNE,
    tiny={"model": {**_POINT_TINY["model"], "proj_dim": 16}, "data": _POINT_TINY["data"]},
))

_DVAE_TINY = {"num_groups": 8, "group_size": 16, "pointnet_dims": [16, 16, 32], "encoder_dims": 32, "num_tokens": 16}
register_method(MethodSpec(
    name="point-dvae", domain="3d", config_cls=PointDVAEConfig, model_cls=PointDVAE,
    description="Point-BERT's tokenizer: discrete VAE over point groups (DGCNN logits, annealed Gumbel-softmax, "
                "folding decoder, Chamfer-L1 + KL to uniform)",
    default_dataset="shapes3d", paper="Yu et al., Point-BERT: Pre-training 3D Point Cloud Transformers with Masked "
                                      "Point Modeling, CVPR 2022", visualize=draw_point_tokens, picture="tokens",
    train_defaults={**POINT_TRAIN, "epochs": 4, "lr": 5e-4, "weight_decay": 5e-4}, adapt=adapt_points,
    tiny={"model": {**_DVAE_TINY, "tokens_dims": 16, "decoder_dims": 16, "dgcnn_width": 4, "decoder_hidden": 16},
          "data": _POINT_TINY["data"]},
))

register_method(MethodSpec(
    name="point-bert", domain="3d", config_cls=PointBERTConfig, model_cls=PointBERT,
    description="Point-BERT: block-masked groups as [MASK] tokens, cross-entropy to a frozen dVAE's token ids, "
                "point-mixing contrastive loss with a momentum encoder and a queue",
    default_dataset="shapes3d", paper="Yu et al., Point-BERT: Pre-training 3D Point Cloud Transformers with Masked "
                                      "Point Modeling, CVPR 2022",
    train_defaults={**POINT_TRAIN, "epochs": 4, "lr": 5e-4, "weight_decay": 0.05}, adapt=adapt_point_bert,
    finetune_options={"pool": "max+mean"},
    tiny={"model": {**_DVAE_TINY, "embed_dim": 32, "depth": 1, "num_heads": 2, "cls_dim": 16, "queue_size": 8,
                    "drop_path": 0.0, "teacher": "random"},
          "data": _POINT_TINY["data"]},
))

register_method(MethodSpec(
    name="i2p-mae", domain="3d", config_cls=I2PMAEConfig, model_cls=I2PMAE,
    description="I2P-MAE: 3-view depth maps through a frozen 2-D ViT; visible 20 % of groups drawn from its "
                "back-projected cls attention, Chamfer on masked groups + MSE to the 2-D features on visible ones",
    default_dataset="shapes3d", paper="Zhang et al., Learning 3D Representations from 2D Pre-trained Models via "
                                      "Image-to-Point Masked Autoencoders, CVPR 2023",
    visualize=draw_point_reconstruction, train_defaults=POINT_TRAIN, adapt=adapt_i2p,
    finetune_options=POINT_FINETUNE,
    tiny={"model": {**_POINT_TINY["model"], "teacher": "random", "img_size": 16, "teacher_embed_dim": 8,
                    "teacher_depth": 1, "teacher_num_heads": 2},
          "data": _POINT_TINY["data"]},
))

register_method(MethodSpec(
    name="fastdit-3d", domain="3d", config_cls=FastDiT3DConfig, model_cls=FastDiT3D,
    description="FastDiT-3D: diffusion transformer on voxelised clouds (adaLN-Zero DiT blocks, linear betas over "
                "1000 steps, eps MSE), voxel-aware masking (99 % of empty / 95 % of occupied patches dropped), "
                "window-attention decoder; DDPM / DDIM sampling (mae-3d generate)",
    default_dataset="shapes3d", paper="Mo et al., Fast Training of Diffusion Transformer with Extreme Masking for 3D "
                                      "Point Clouds Generation, ECCV 2024 (base: DiT-3D, Mo et al. 2023)",
    visualize=draw_samples, picture="samples",
    # constant lr, AdamW without weight decay as the reference (whose lr is 1e-4 over 10 000 epochs; 1e-3 here for
    # a few CPU minutes)
    train_defaults={"epochs": 8, "batch_size": 32, "lr": 1e-3, "min_lr": 1e-3, "warmup_epochs": 0,
                    "weight_decay": 0.0, "betas": (0.9, 0.999), "log_every": 20},
    tiny={"model": {"voxel_size": 8, "patch_size": 2, "embed_dim": 24, "depth": 1, "num_heads": 2,
                    "decoder_depth": 1, "window_size": 2, "num_steps": 50, "sample_steps": 2},
          "data": _POINT_TINY["data"]},
))

register_method(MethodSpec(
    name="r-mae", domain="3d", config_cls=RMAEConfig, model_cls=RMAE,
    description="R-MAE: LiDAR voxels, 80 % of the angular sectors around the sensor masked, occupancy decoder",
    default_dataset="driving-scenes", paper="Tayebati et al., radial masked autoencoding for LiDAR (R-MAE)",
    visualize=draw_lidar_reconstruction,
    train_defaults={"epochs": 10, "batch_size": 8, "lr": 1e-3, "warmup_epochs": 1, "log_every": 4},
    adapt=adapt_grid,
    tiny={"model": {"patch": [4, 4, 4], "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16,
                    "decoder_depth": 1, "decoder_num_heads": 2},
          "data": {"grid": [32, 32, 4], "voxel_size": [1.6, 1.6, 1.2], "grid_min": [-25.6, -25.6, -2.2],
                   "beams": 16, "azimuths": 256, "num_train": 4, "num_test": 2}},
))

register_dataset(DatasetSpec(
    name="point-folder", domain="3d", config_cls=PointFolderConfig, build=build_point_data, takes_path=True,
    description="your clouds / meshes in class sub-folders (ModelNet layout) or an .npz, --data PATH"))
register_dataset(DatasetSpec(
    name="shapes3d", domain="3d", config_cls=Shapes3DConfig, build=lambda cfg, split: Shapes3D(cfg, split),
    description="embedded: 15 classes of Open3D primitives and combinations, deformed, rotated, noisy"))

for _name, (_model, _data, _desc) in POINT_MAE_PRESETS.items():
    register_preset(PresetSpec(name=_name, domain="3d", method="point-mae",
                               overrides={"model": _model, "data": _data}, description=_desc))

register_dataset(DatasetSpec(
    name="shapes3d-depth", domain="3d", config_cls=ShapesDepthConfig, build=lambda cfg, split: ShapesDepth(cfg, split),
    description="embedded: the shapes3d clouds as depth maps from I2P-MAE's 3 views (its 2-D teacher's images)"))
register_dataset(DatasetSpec(
    name="driving-scenes", domain="3d", config_cls=DrivingScenesConfig,
    build=lambda cfg, split: DrivingScenes(cfg, split),
    description="embedded LiDAR: synthetic streets ray-cast with Open3D (32 beams, 1024 azimuths), voxel labels"))
register_dataset(DatasetSpec(
    name="lidar-folder", domain="3d", config_cls=LidarFolderConfig, build=lambda cfg, split: LidarFolder(cfg, split),
    takes_path=True, description="your LiDAR scans (KITTI .bin, .pcd, .ply), --dataset lidar-folder --data DIR"))

register_probe("svm", probe_svm)
