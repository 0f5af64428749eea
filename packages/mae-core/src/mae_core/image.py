"""The image domain, mae-core's own reference: registers the image MAE, the contrastive ViT (SimCLR), the embedded
shapes dataset, the image folder and array datasets and the ViT presets."""
from __future__ import annotations

import dataclasses
import os

import torch

from .data import ArrayImageConfig, ArrayImageDataset, ImageFolderConfig, ImageFolderDataset, ShapesConfig, SyntheticShapes
from .models.contrastive_vit import PRESETS as SIMCLR_PRESETS, ContrastiveViT, ContrastiveViTConfig, adapt_contrastive
from .models.image_mae import PRESETS, ImageMAE, ImageMAEConfig
from .registry import DatasetSpec, MethodSpec, PresetSpec, register_dataset, register_method, register_preset
from .viz import save_image_reconstruction


def visualize_images(model, dataset, path, num: int = 8, seed: int = 0):
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    images = torch.stack([dataset[i]["image"] for i in idx])
    mean = getattr(dataset, "mean", (0.5,) * images.shape[1])
    std = getattr(dataset, "std", (0.5,) * images.shape[1])
    return save_image_reconstruction(model.cpu(), images, path, mean=mean, std=std, seed=seed)


def adapt_image(model_cfg: ImageMAEConfig, data_cfg, dataset) -> ImageMAEConfig:
    """Make the model's input size and channels follow the data."""
    size = getattr(data_cfg, "image_size", model_cfg.img_size)
    chans = getattr(dataset, "in_chans", getattr(data_cfg, "in_chans", model_cfg.in_chans))
    return dataclasses.replace(model_cfg, img_size=size, in_chans=chans)


METHOD = register_method(MethodSpec(
    name="image-mae", domain="core", default=True, config_cls=ImageMAEConfig, model_cls=ImageMAE,
    description="ViT masked autoencoder for images", default_dataset="shapes",
    paper="He et al., Masked Autoencoders Are Scalable Vision Learners, CVPR 2022",
    visualize=visualize_images,
    train_defaults={"epochs": 30, "batch_size": 128, "base_lr": 1.5e-3, "warmup_epochs": 3},
    # the reference fine-tuning recipe, but blr 1.5e-3 instead of 1e-3: on the embedded shapes (10 epochs after a
    # 60-epoch run) 76.2 / 77.0 % (2 seeds) against 69.2 % at 1e-3 (docs/benchmarks.md)
    finetune_defaults={"base_lr": 1.5e-3},
    adapt=adapt_image,
    tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16,
                    "decoder_depth": 1, "decoder_num_heads": 2},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
))

register_dataset(DatasetSpec(
    name="shapes", domain="core", config_cls=ShapesConfig, build=lambda cfg, split: SyntheticShapes(cfg, split),
    description="embedded: 8 procedurally generated shape classes on textured backgrounds, 32 px"))
register_dataset(DatasetSpec(
    name="image-folder", domain="core", config_cls=ImageFolderConfig,
    build=lambda cfg, split: ImageFolderDataset(cfg, split), takes_path=True,
    description="your images in class sub-folders (torchvision ImageFolder layout), --data PATH"))

register_dataset(DatasetSpec(
    name="image-array", domain="core", config_cls=ArrayImageConfig,
    build=lambda cfg, split: ArrayImageDataset(cfg, split), takes_path=True,
    accepts=lambda path: str(path).endswith(".npz"),
    description="images as arrays in one .npz (MedMNIST train_images/train_labels layout), --data FILE.npz"))

for _name, (_over, _desc) in PRESETS.items():
    register_preset(PresetSpec(name=_name, domain="core", method="image-mae", overrides={"model": _over},
                               description=_desc))

# ---- the contrastive ViT: the contrastive teacher of the distillation methods ------------------------------------------
register_method(MethodSpec(
    name="image-simclr", domain="core", config_cls=ContrastiveViTConfig, model_cls=ContrastiveViT,
    description="contrastive ViT (SimCLR: two augmented views, projector, NT-Xent); the contrastive teacher of "
                "the distillation methods", default_dataset="shapes",
    paper="Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020",
    train_defaults={"epochs": 30, "batch_size": 128, "base_lr": 1e-3, "warmup_epochs": 3},
    adapt=adapt_contrastive,
    tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2, "proj_hidden_dim": 32,
                    "proj_dim": 16},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
))
for _name, (_over, _desc) in SIMCLR_PRESETS.items():
    register_preset(PresetSpec(name=_name, domain="core", method="image-simclr", overrides={"model": _over},
                               description=_desc))

# ---- LMD: an MAE over the latent grid of a frozen autoencoder that the library trains first --------------------------
from .models.latent_ae import LatentAE, LatentAEConfig  # noqa: E402
from .models.lmd import LMD, LMDConfig, adapt_lmd, visualize_lmd  # noqa: E402

register_method(MethodSpec(
    name="latent-ae", domain="core", config_cls=LatentAEConfig, model_cls=LatentAE,
    description="small convolutional KL autoencoder (image -> latent grid -> image); LMD's frozen first stage",
    default_dataset="shapes", paper="Rombach et al., High-Resolution Image Synthesis with Latent Diffusion Models, "
                                    "CVPR 2022 (the first-stage autoencoder)",
    train_defaults={"epochs": 10, "batch_size": 128, "base_lr": 1e-3, "warmup_epochs": 1},
    adapt=adapt_image,
    tiny={"model": {"width": 8, "latent_channels": 2, "downsample": 2},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
))
register_method(MethodSpec(
    name="lmd", domain="core", config_cls=LMDConfig, model_cls=LMD,
    description="LMD: MAE predicting the masked latent patches of a frozen autoencoder, cosine mask-ratio schedule "
                "0.15 -> 0.75", default_dataset="shapes",
    paper="Ma et al., LMD: Faster Image Reconstruction with Latent Masking Diffusion, AAAI 2024",
    visualize=visualize_lmd,
    train_defaults={"epochs": 30, "batch_size": 128, "base_lr": 1.5e-3, "warmup_epochs": 3, "mask_schedule": "cosine"},
    adapt=adapt_lmd,
    tiny={"model": {"patch_size": 2, "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16,
                    "decoder_depth": 1, "decoder_num_heads": 2, "autoencoder": "random", "ae_width": 8,
                    "latent_downsample": 2},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
))

# ---- the distillation methods (DMAE, MaskAlign) register themselves ---------------------------------------------------
from .distill import dmae, maskalign  # noqa: E402,F401
from .distill import g2sd  # noqa: E402,F401
from .distill import hybrid, mr_mae  # noqa: E402,F401

# ---- TokenUnify: random-token, then next-all + next-token prediction over tokens corrupted in place --------------------
from .data.membranes import MembranesConfig, SyntheticMembranes  # noqa: E402
from .models.tokenunify import TokenUnify, TokenUnifyConfig, adapt_tokenunify, visualize_tokenunify  # noqa: E402

register_dataset(DatasetSpec(
    name="membranes", domain="core", config_cls=MembranesConfig,
    build=lambda cfg, split: SyntheticMembranes(cfg, split),
    description="embedded: EM-like grey images of Voronoi cells with wavy, fading membranes and organelles, 32 px, "
                "with instance labels and boundary maps (the segmentation probe)"))
register_method(MethodSpec(
    name="tokenunify", domain="core", config_cls=TokenUnifyConfig, model_cls=TokenUnify,
    description="TokenUnify: stage 1 random-token prediction (40 % of tokens noise), stage 2 next-all + next-token "
                "from a noise-filled random-length prefix (ViT, causal pass for the next-token head)",
    default_dataset="membranes",
    paper="Chen et al., TokenUnify: Scaling Up Autoregressive Pretraining for Neuron Segmentation, ICCV 2025",
    visualize=visualize_tokenunify,
    train_defaults={"epochs": 5, "batch_size": 64, "base_lr": 1.5e-3, "warmup_epochs": 0.5},
    adapt=adapt_tokenunify,
    tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2, "init": "none"},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
))

# ---- face MAE (FMAE-IAT): the image MAE on faces; fine-tuning detects action units with an identity adversary ---------
from .data.faces import FaceFolder, FaceFolderConfig, FacesConfig, SyntheticFaces  # noqa: E402

register_dataset(DatasetSpec(
    name="faces", domain="core", config_cls=FacesConfig, build=lambda cfg, split: SyntheticFaces(cfg, split),
    description="embedded: procedural faces of 24 + 8 identities with 6 action units (multi-label) and a subject "
                "field; AUs follow identity in the training split, test subjects are unseen, 32 px"))
register_dataset(DatasetSpec(
    name="face-folder", domain="core", config_cls=FaceFolderConfig, build=lambda cfg, split: FaceFolder(cfg, split),
    takes_path=True, accepts=lambda p: os.path.isfile(os.path.join(str(p), "labels.csv")),
    description="your face crops: a folder with labels.csv (image, subject and AU... columns), --dataset face-folder "
                "--data DIR; test subjects held out"))
register_method(MethodSpec(
    name="face-mae", domain="core", config_cls=ImageMAEConfig, model_cls=ImageMAE,
    description="FMAE: the image MAE pretrained on faces; finetune detects action units (BCE) with an identity "
                "adversary behind gradient reversal (FMAE-IAT, --adversary subject --adversary-lambda L)",
    default_dataset="faces",
    paper="Ning et al., Representation Learning and Identity Adversarial Training for Facial Behavior "
          "Understanding, 2024",
    visualize=visualize_images,
    train_defaults={"epochs": 40, "batch_size": 128, "base_lr": 1.5e-3, "warmup_epochs": 4},
    # BP4D_finetune.py's recipe: blr 5e-4, layer decay 0.65, weight decay 0.05, drop path 0.1, 20 epochs with 2 of
    # warm-up, batch 64, BCE without smoothing; the identity adversary on (reference default lambda 1)
    finetune_defaults={"base_lr": 5e-4, "epochs": 20, "warmup_epochs": 2, "weight_decay": 0.05, "batch_size": 64},
    finetune_options={"layer_decay": 0.65, "drop_path_rate": 0.1, "label_smoothing": 0.0, "adversary": "subject",
                      "adversary_lambda": 1.0},
    adapt=adapt_image,
    tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16,
                    "decoder_depth": 1, "decoder_num_heads": 2},
          "data": {"image_size": 16, "train_subjects": 2, "test_subjects": 1, "per_subject_train": 2,
                   "per_subject_test": 2}},
))

# ---- MultiMAE: RGB + depth + segmentation, a Dirichlet-split visible budget, one cross-attending decoder per task -----
from .data.multimodal import MultimodalFolder, MultimodalFolderConfig, MultiShapes, MultiShapesConfig  # noqa: E402
from .models.multimae import MultiMAE, MultiMAEConfig, adapt_multimae, visualize_multimae  # noqa: E402

register_dataset(DatasetSpec(
    name="multishapes", domain="core", config_cls=MultiShapesConfig, build=lambda cfg, split: MultiShapes(cfg, split),
    description="embedded: the shapes scenes with a procedural depth map and a per-pixel class mask (background + 8 "
                "shape classes), 32 px"))
register_dataset(DatasetSpec(
    name="multimodal-folder", domain="core", config_cls=MultimodalFolderConfig,
    build=lambda cfg, split: MultimodalFolder(cfg, split), takes_path=True,
    accepts=lambda p: all(os.path.isdir(os.path.join(str(p), d)) for d in ("rgb", "depth", "mask"))
    or all(os.path.isdir(os.path.join(str(p), "train", d)) for d in ("rgb", "depth", "mask")),
    description="your aligned rgb/, depth/ and mask/ files (same names), --dataset multimodal-folder --data DIR"))
register_method(MethodSpec(
    name="multimae", domain="core", config_cls=MultiMAEConfig, model_cls=MultiMAE,
    description="MultiMAE: RGB + depth + segmentation tokens, a visible budget split by Dirichlet(1), one "
                "cross-attending decoder per task (RGB MSE + normalised RGB MSE + depth L1 + segmentation CE); "
                "features from any subset of modalities (--probe-inputs rgb-depth)",
    default_dataset="multishapes",
    paper="Bachmann et al., MultiMAE: Multi-modal Multi-task Masked Autoencoders, ECCV 2022",
    visualize=visualize_multimae,
    train_defaults={"epochs": 10, "batch_size": 128, "base_lr": 1.5e-3, "warmup_epochs": 1},
    adapt=adapt_multimae,
    tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16,
                    "decoder_depth": 1, "decoder_num_heads": 2, "seg_embed_dim": 8},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
))

# ---- OpenSDI / MaskCLIP: localising generated regions with a frozen contrastive ViT fused into an MAE ViT ---------------
from .data.sdi import SDIConfig, SyntheticSDI  # noqa: E402
from .models.maskclip_sdi import (MaskCLIPSDI, MaskCLIPSDIConfig, adapt_maskclip_sdi,  # noqa: E402
                                  visualize_maskclip_sdi)

register_dataset(DatasetSpec(
    name="sdi-shapes", domain="core", config_cls=SDIConfig, build=lambda cfg, split: SyntheticSDI(cfg, split),
    description="embedded: the shapes, half with one rectangular region repainted by a generator (an image MAE "
                "trained by the library, a blur or a cell shuffle) and its pixel mask, 32 px"))
register_method(MethodSpec(
    name="maskclip-sdi", domain="core", config_cls=MaskCLIPSDIConfig, model_cls=MaskCLIPSDI,
    description="OpenSDI's MaskCLIP: a frozen contrastive ViT fused by cross-attention into an MAE-initialised ViT; "
                "mask decoder for the generated region and a real / fake head (CE + BCE + 20 x edge BCE)",
    default_dataset="sdi-shapes",
    paper="Wang et al., OpenSDI: Spotting Diffusion-Generated Images in the Open World, 2025",
    visualize=visualize_maskclip_sdi, picture="forgery_masks",
    # reference: AdamW, lr 1e-4 at batch 16 (base 1.6e-3 at 256), weight decay 0.05, no warm-up, cosine to 0
    train_defaults={"epochs": 4, "batch_size": 64, "base_lr": 1.6e-3, "warmup_epochs": 0, "weight_decay": 0.05,
                    "min_lr": 0.0},
    adapt=adapt_maskclip_sdi,
    tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "fusion_blocks": [1],
                    "teacher_layers": [0], "teacher": "random", "teacher_embed_dim": 32, "teacher_depth": 1,
                    "teacher_num_heads": 2, "init": "none", "decoder_embed_dim": 8, "align_dim": 16, "drop_path": 0.0,
                    "dropout": 0.0},
          "data": {"image_size": 16, "num_train": 4, "num_test": 2, "generator": "blur", "fake_fraction": 0.5,
                   "max_region": 3}},
))
