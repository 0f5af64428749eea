"""mae-medical: masked autoencoders for medical images on MONAI.

Importing the package registers its methods (``bm-mae``, ``hi-end-mae``, ``xray-mae``, ``anomaly-mae``, ``spark``,
``simclr-cnn``...), datasets, presets and extra commands (``impute``, ``export-unetr``, ``anomaly``; ``finetune``
follows the X-ray recipe for ``xray-mae``) with mae-core's registry.
"""
from __future__ import annotations

import dataclasses
import glob
import os

from mae_core.registry import DatasetSpec, MethodSpec, PresetSpec, register_dataset, register_method, register_preset

from .data.brain_folder import BrainFolder, BrainFolderConfig
from .data.synthetic_brain import SyntheticBrain, SyntheticBrainConfig
from .methods.bm_mae import BMMAE, PRESETS as BM_PRESETS, BMMAEConfig
from .viz import visualize_bm_mae


def adapt_bm_mae(model_cfg: BMMAEConfig, data_cfg, dataset) -> BMMAEConfig:
    """The model's crop size follows the data; its modalities cover the data's."""
    size = getattr(data_cfg, "image_size", None) or model_cfg.img_size
    mods = list(model_cfg.modality_names)
    for m in getattr(data_cfg, "modalities", []):
        if m not in mods:
            mods.append(m)
    return dataclasses.replace(model_cfg, img_size=int(size), modality_names=mods)


BM_MAE = register_method(MethodSpec(
    name="bm-mae", domain="medical", default=True, config_cls=BMMAEConfig, model_cls=BMMAE,
    description="3-D multimodal MRI MAE for any subset of modalities (per-modality tokenizers, Dirichlet budget)",
    default_dataset="synthetic-brain",
    paper="Robinet et al., BM-MAE: multimodal masked autoencoder pre-training for 3D MRI with missing modalities, 2025",
    visualize=visualize_bm_mae,
    # 20 epochs: at 5 the decoder only predicts the mean and the linear probe ties a random-init encoder
    # (docs/benchmarks.md, "What the no-argument runs show")
    train_defaults={"epochs": 20, "batch_size": 8, "base_lr": 1.5e-4, "lr": 1e-3, "warmup_epochs": 0.5,
                    "log_every": 5},
    # the no-argument run on the embedded 32^3 heads: patch 16 (a 2 x 2 x 2 grid per modality) and half of the
    # tokens visible, 90 epochs (2880 steps, about 4 min on one thread with the cases cached): at patch 8, 25 %
    # visible and 20 epochs the loss stayed at the positional mean and masked patches came back as a blurred
    # head without the tumour; now masked patches come back as the case's own head, and a tumour seen in T2 /
    # FLAIR comes back in masked T1 / T1ce patches as a blurred blob at about two thirds of its contrast
    # (docs/benchmarks.md, medical row). A user's --data keeps the paper's patch and budget
    default_dataset_train={"epochs": 90},
    default_dataset_model={"patch_size": 16, "visible_fraction": 0.5},
    adapt=adapt_bm_mae,
    tiny={"model": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16,
                    "decoder_depth": 1, "decoder_num_heads": 2},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
))

def _has_nifti(path) -> bool:
    """``--data PATH`` is a BM-MAE case folder when its case sub-folders hold NIfTI files."""
    return os.path.isdir(path) and bool(glob.glob(os.path.join(str(path), "*", "*.nii*")))


register_dataset(DatasetSpec(
    name="synthetic-brain", domain="medical", config_cls=SyntheticBrainConfig,
    build=lambda cfg, split: SyntheticBrain(cfg, split),
    description="embedded: synthetic 4-modality head volumes (tissue map -> T1/T1ce/T2/FLAIR), tumour size class"))
register_dataset(DatasetSpec(
    name="brain-folder", domain="medical", config_cls=BrainFolderConfig,
    build=lambda cfg, split: BrainFolder(cfg, split), takes_path=True, accepts=_has_nifti,
    description="your MRI cases: one sub-folder per case, one NIfTI per modality (BraTS / BrainLes names), --data"))

for _name, (_over, _desc) in BM_PRESETS.items():
    register_preset(PresetSpec(name=_name, domain="medical", method="bm-mae", overrides=_over, description=_desc))

# ---- chest X-ray MAE recipe ---------------------------------------------------------------------------------------------
from .data.xray import (ChestAnomaly, ChestAnomalyConfig, MedicalImages, MedicalImagesConfig,  # noqa: E402
                        SyntheticChest, SyntheticChestConfig)
from .methods.anomaly_mae import AnomalyMAE, AnomalyMAEConfig  # noqa: E402
from .methods.xray_mae import FINETUNE_TRAIN, RECIPE, XRayMAE, XRayMAEConfig  # noqa: E402


def _visualize_2d(model, dataset, path, num: int = 8, seed: int = 0):
    from mae_core.image import visualize_images
    return visualize_images(model, dataset, path, num=num, seed=seed)


def adapt_2d(model_cfg, data_cfg, dataset):
    size = getattr(data_cfg, "image_size", model_cfg.img_size)
    return dataclasses.replace(model_cfg, img_size=int(size))


XRAY = register_method(MethodSpec(
    name="xray-mae", domain="medical", config_cls=XRayMAEConfig, model_cls=XRayMAE,
    description="chest X-ray MAE recipe: 1-channel ViT MAE, mask 0.9, crop 0.5-1 + flip; fine-tune ld 0.55, dp 0.2, "
                "crop 0.08-1 + flip + RandAugment m6 mstd 0.5",
    default_dataset="synthetic-chest",
    paper="Xiao et al., Delving into Masked Autoencoders for Multi-Label Thorax Disease Classification, WACV 2023",
    visualize=_visualize_2d,
    train_defaults={"epochs": 10, "batch_size": 128, "base_lr": 1.5e-4, "warmup_epochs": 1},
    # `finetune` of an xray-mae run (or --scratch) follows the reference fine-tuning recipe unless a flag is given
    finetune_defaults={k: v for k, v in FINETUNE_TRAIN.items() if v is not None},
    finetune_options={"layer_decay": RECIPE["layer_decay"], "drop_path_rate": RECIPE["drop_path"],
                      "label_smoothing": RECIPE["label_smoothing"], "pool": RECIPE["pool"]},
    finetune_data={"augment": "finetune"},
    adapt=adapt_2d,
    tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16,
                    "decoder_depth": 1, "decoder_num_heads": 2},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
))

ANOMALY = register_method(MethodSpec(
    name="anomaly-mae", domain="medical", config_cls=AnomalyMAEConfig, model_cls=AnomalyMAE,
    description="MemMC-MAE anomaly detection: memory-augmented encoder, multi-level cross-attention decoder",
    default_dataset="chest-anomaly",
    paper="Tian et al., Unsupervised anomaly detection in medical images with a memory-augmented multi-level "
          "cross-attentional masked autoencoder, MLMI 2023",
    visualize=_visualize_2d,
    train_defaults={"epochs": 10, "batch_size": 128, "base_lr": 1.5e-4, "lr": 1e-3, "warmup_epochs": 1},
    adapt=adapt_2d,
    tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "memory_slots": 4, "levels": 2,
                    "decoder_embed_dim": 16, "decoder_num_heads": 2, "num_masks": 2},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
))

register_dataset(DatasetSpec(
    name="synthetic-chest", domain="medical", config_cls=SyntheticChestConfig,
    build=lambda cfg, split: SyntheticChest(cfg, split),
    description="embedded: synthetic chest radiographs, multi-label nodule / effusion / cardiomegaly"))
register_dataset(DatasetSpec(
    name="medical-images", domain="medical", config_cls=MedicalImagesConfig,
    build=lambda cfg, split: MedicalImages(cfg, split), takes_path=True,
    accepts=lambda path: str(path).endswith(".npz") or (os.path.isdir(path) and not _has_nifti(path)),
    description="MedMNIST .npz, or PNG / JPEG / DICOM folder + labels CSV (--dataset medical-images --data PATH)"))
register_dataset(DatasetSpec(
    name="chest-anomaly", domain="medical", config_cls=ChestAnomalyConfig,
    build=lambda cfg, split: ChestAnomaly(cfg, split),
    description="embedded: normal synthetic chests (train); test half with inserted lesions, lesion masks"))

# ---- Hi-End-MAE ------------------------------------------------------------------------------------------------------
from .methods.hi_end_mae import HiEndMAE, HiEndMAEConfig  # noqa: E402
from .viz import visualize_volume_mae  # noqa: E402


def adapt_volume(model_cfg: HiEndMAEConfig, data_cfg, dataset) -> HiEndMAEConfig:
    """The crop size and the input channels (modalities, in the data's order) follow the data."""
    size = getattr(data_cfg, "image_size", None) or model_cfg.img_size
    mods = list(getattr(data_cfg, "modalities", None) or model_cfg.modality_names)
    return dataclasses.replace(model_cfg, img_size=int(size), modality_names=mods)


HI_END = register_method(MethodSpec(
    name="hi-end-mae", domain="medical", config_cls=HiEndMAEConfig, model_cls=HiEndMAE,
    description="3-D ViT MAE whose decoder cross-attends to encoder taps at 3/4, 1/2, 1/4 depth (deepest first)",
    default_dataset="synthetic-brain",
    paper="Tang et al., Hi-End-MAE: Hierarchical encoder-driven masked autoencoders are stronger vision learners "
          "for medical image segmentation, 2025",
    visualize=visualize_volume_mae,
    # the reference: AdamW lr 1e-4 (not scaled by the batch), betas (0.9, 0.95), weight decay 0.05, batch 24,
    # 10 warm-up epochs of 1000; the CPU default keeps the optimiser and shortens the schedule (lr 1e-3 for it)
    train_defaults={"epochs": 5, "batch_size": 8, "lr": 1e-3, "warmup_epochs": 0.5, "betas": (0.9, 0.95),
                    "weight_decay": 0.05, "log_every": 5},
    adapt=adapt_volume,
    tiny={"model": {"patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2, "decoder_embed_dim": 16,
                    "decoder_depth": 1, "decoder_num_heads": 2},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
))

# ---- SparK -------------------------------------------------------------------------------------------------------------
from .methods.spark import SparK, SparK3DConfig, SparKConfig  # noqa: E402
from .viz import visualize_spark  # noqa: E402


def adapt_spark(model_cfg: SparKConfig, data_cfg, dataset) -> SparKConfig:
    """Size, channels and 2-D / 3-D follow the data (volumes with one key per modality: 3-D, stacked channels)."""
    size = int(getattr(data_cfg, "image_size", None) or model_cfg.img_size)
    mods = getattr(data_cfg, "modalities", None)
    if mods:
        return dataclasses.replace(model_cfg, img_size=size, spatial_dims=3, modality_names=list(mods),
                                   in_chans=len(mods))
    chans = int(getattr(dataset, "in_chans", None) or getattr(data_cfg, "in_chans", None) or model_cfg.in_chans)
    return dataclasses.replace(model_cfg, img_size=size, spatial_dims=2, in_chans=chans)


_SPARK = dict(
    config_cls=SparKConfig, model_cls=SparK, domain="medical", visualize=visualize_spark, adapt=adapt_spark,
    paper="Tian et al., Designing BERT for convolutional networks: sparse and hierarchical masked modeling, ICLR "
          "2023 (for small medical data sets: Wolf et al., Self-supervised pre-training with contrastive and masked "
          "autoencoder methods for dealing with small datasets in deep learning for medical imaging, 2023)",
    # the reference: LAMB, base lr 2e-4 x batch / 256, weight decay 0.04, betas (0.9, 0.95), clip 5
    train_defaults={"epochs": 5, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 0.5, "weight_decay": 0.04,
                    "betas": (0.9, 0.95), "clip_grad": 5.0, "log_every": 5},
    tiny={"model": {"widths": [4, 8, 8, 16], "decoder_width": 16},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
)
register_method(MethodSpec(
    name="spark", default_dataset="synthetic-chest",
    description="SparK: sparse CNN (mask re-applied after every conv / pool, sparse BatchNorm) + UNet decoder, 2-D",
    **_SPARK))
register_method(MethodSpec(
    name="spark-3d", default_dataset="synthetic-brain",
    description="SparK on volumes: sparse 3-D MONAI ResNet + 3-D UNet decoder (the modalities as channels)",
    **{**_SPARK, "config_cls": SparK3DConfig, "train_defaults": {**_SPARK["train_defaults"], "batch_size": 8}}))

# ---- SimCLR on SparK's CNN: the contrastive baseline of the SparK label-fraction comparison ---------------------------
from mae_core.models.contrastive_vit import adapt_contrastive  # noqa: E402

from .methods.simclr_cnn import SimCLRCNN, SimCLRCNNConfig, visualize_simclr_cnn  # noqa: E402

register_method(MethodSpec(
    name="simclr-cnn", domain="medical", config_cls=SimCLRCNNConfig, model_cls=SimCLRCNN,
    description="SimCLR on spark's CNN (MONAI / torchvision ResNet): two views, projector, NT-Xent; 2-D",
    default_dataset="synthetic-chest",
    paper="Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020 (the "
          "contrastive baseline of Wolf et al., Self-supervised pre-training with contrastive and masked "
          "autoencoder methods for dealing with small datasets in deep learning for medical imaging, 2023)",
    visualize=visualize_simclr_cnn, picture="views",
    # spark's optimisation, so the two pretrainings differ only in the objective
    train_defaults=dict(_SPARK["train_defaults"]),
    adapt=adapt_contrastive,
    tiny={"model": {"widths": [4, 8, 8, 16], "proj_hidden_dim": 16, "proj_dim": 8},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
))

from . import commands  # noqa: E402,F401  (impute, export-unetr, anomaly)
