"""mae-medical: masked autoencoders for medical images on MONAI.

Importing the package registers its methods (``bm-mae``, ``xray-mae``, ``anomaly-mae``), datasets, presets and
extra commands (``impute``, ``anomaly``) with mae-core's registry.
"""
from __future__ import annotations

import dataclasses

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
    name="bm-mae", domain="medical", config_cls=BMMAEConfig, model_cls=BMMAE,
    description="3-D multimodal MRI MAE for any subset of modalities (per-modality tokenizers, Dirichlet budget)",
    default_dataset="synthetic-brain",
    paper="Robinet et al., BM-MAE: multimodal masked autoencoder pre-training for 3D MRI with missing modalities, 2025",
    visualize=visualize_bm_mae,
    train_defaults={"epochs": 5, "batch_size": 8, "base_lr": 1.5e-4, "lr": 1e-3, "warmup_epochs": 0.5,
                    "log_every": 5},
))
BM_MAE.adapt = adapt_bm_mae

register_dataset(DatasetSpec(
    name="synthetic-brain", domain="medical", config_cls=SyntheticBrainConfig,
    build=lambda cfg, split: SyntheticBrain(cfg, split),
    description="embedded: synthetic 4-modality head volumes (tissue map -> T1/T1ce/T2/FLAIR), tumour size class"))
register_dataset(DatasetSpec(
    name="brain-folder", domain="medical", config_cls=BrainFolderConfig,
    build=lambda cfg, split: BrainFolder(cfg, split), takes_path=True,
    description="your MRI cases: one sub-folder per case, one NIfTI per modality (BraTS / BrainLes names), --data"))

for _name, (_over, _data, _desc) in BM_PRESETS.items():
    register_preset(PresetSpec(name=_name, domain="medical", method="bm-mae", overrides={"model": _over, "data": _data},
                               description=_desc))

from . import commands  # noqa: E402,F401  (impute, anomaly)
