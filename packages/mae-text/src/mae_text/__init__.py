"""mae-text: masked autoencoders for text retrieval: RetroMAE, DupMAE (RetroMAE v2) and Starbucks 2D Matryoshka
embeddings, built from mae-core. Importing the package registers its methods, datasets and commands."""
from __future__ import annotations

from mae_core.registry import CommandSpec, DatasetSpec, MethodSpec, register_command, register_dataset, \
    register_method

from .commands import (adapt_text, encode_arguments, evaluate_arguments, finetune_arguments, run_encode,
                       run_evaluate, run_finetune_cmd)
from .data import TextDataConfig, build_pydocs, build_text_files
from .image_reports import ImageReportConfig, build_image_reports
from .m3ae_viz import visualize_m3ae
from .methods.dupmae import DupMAE, DupMAEConfig
from .methods.m3ae import M3AE, M3AEConfig, adapt_m3ae
from .methods.mlm import MLM, MLMConfig
from .methods.retromae import RetroMAE, RetroMAEConfig
from .methods.starbucks import Starbucks, StarbucksConfig
from .viz import visualize_text

PRETRAIN_DEFAULTS = {"epochs": 3, "batch_size": 32, "lr": 5e-4, "warmup_epochs": 0.2, "weight_decay": 0.01,
                     "betas": (0.9, 0.999), "clip_grad": 1.0}

_TINY_MODEL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "max_len": 32, "vocab_size": 300}
_TINY_DATA = {"max_passages": 16}

for _spec in (
    MethodSpec(name="retromae", domain="text", default=True, config_cls=RetroMAEConfig, model_cls=RetroMAE,
               description="BERT-style encoder, whole-word MLM 0.3 + one-layer enhanced decoder from [CLS]",
               default_dataset="pydocs", train_defaults=dict(PRETRAIN_DEFAULTS), adapt=adapt_text, visualize=visualize_text,
               # the embedded run: a 2000-token vocabulary and a 2-block encoder (cheaper steps), 7 epochs at batch 16
               # and lr 2e-3 (3451 steps, about 260 s alone on 2 cores): MLM fills in whole words and the probes gain
               # over a random encoder (docs/benchmarks.md, text rows); a user's corpus keeps the method's 6000-token
               # vocabulary, 4 blocks, 3 epochs, batch 32 and lr 5e-4
               default_dataset_model={"vocab_size": 2000, "depth": 2},
               default_dataset_train={"epochs": 7, "lr": 2e-3, "batch_size": 16},
               paper="Xiao et al., RetroMAE, EMNLP 2022",
               tiny={"model": dict(_TINY_MODEL), "data": dict(_TINY_DATA)}),
    MethodSpec(name="dupmae", domain="text", config_cls=DupMAEConfig, model_cls=DupMAE,
               description="RetroMAE + bag-of-words loss; [CLS] + top-k lexical representation",
               default_dataset="pydocs", train_defaults=dict(PRETRAIN_DEFAULTS), adapt=adapt_text, visualize=visualize_text,
               paper="Liu et al., RetroMAE v2 / DupMAE, 2023",
               tiny={"model": {**_TINY_MODEL, "topk": 16}, "data": dict(_TINY_DATA)}),
    MethodSpec(name="mlm", domain="text", config_cls=MLMConfig, model_cls=MLM,
               description="baseline: plain whole-word MLM (0.3) of the same encoder, no decoder",
               default_dataset="pydocs", train_defaults=dict(PRETRAIN_DEFAULTS), adapt=adapt_text, visualize=visualize_text,
               paper="Devlin et al., BERT, NAACL 2019 (RetroMAE's ablation baseline)",
               tiny={"model": dict(_TINY_MODEL), "data": dict(_TINY_DATA)}),
    MethodSpec(name="starbucks", domain="text", config_cls=StarbucksConfig, model_cls=Starbucks,
               description="RetroMAE losses on (layer, dim) truncations; 2D Matryoshka embeddings",
               default_dataset="pydocs", train_defaults=dict(PRETRAIN_DEFAULTS), adapt=adapt_text, visualize=visualize_text,
               paper="Zhuang et al., Starbucks: 2D Matryoshka embeddings, 2024",
               tiny={"model": dict(_TINY_MODEL), "data": dict(_TINY_DATA)}),
    MethodSpec(name="m3ae", domain="text", config_cls=M3AEConfig, model_cls=M3AE,
               description="image + report: ViT and BERT towers, co-attention fusion; MLM 15 % + MIM 75 % "
                           "(intermediate fusion layer) + ITM",
               default_dataset="image-reports", adapt=adapt_m3ae, visualize=visualize_m3ae,
               train_defaults={"epochs": 3, "batch_size": 32, "lr": 5e-4, "warmup_epochs": 0.5,
                               "weight_decay": 0.01, "betas": (0.9, 0.98), "clip_grad": 1.0},
               paper="Chen et al., Multi-Modal Masked Autoencoders for Medical Vision-and-Language "
                     "Pre-Training (M3AE), MICCAI 2022",
               tiny={"model": {"embed_dim": 32, "vision_depth": 1, "text_depth": 1, "fusion_depth": 2,
                               "num_heads": 2, "decoder_embed_dim": 16, "decoder_num_heads": 2, "vocab_size": 300},
                     "data": {"num_train": 8, "num_test": 8, "image_size": 16}}),
):
    register_method(_spec)

register_dataset(DatasetSpec(
    name="pydocs", domain="text", config_cls=TextDataConfig, build=build_pydocs,
    description="embedded: docstrings of the installed Python standard library, passages titled by dotted name"))
register_dataset(DatasetSpec(
    name="text-files", domain="text", config_cls=TextDataConfig, build=build_text_files, takes_path=True,
    description="your text: .txt (blank-line passages), .jsonl ({text, title?}), a folder of them, or a BEIR folder"))
register_dataset(DatasetSpec(
    name="image-reports", domain="text", config_cls=ImageReportConfig, build=build_image_reports, takes_path=True,
    accepts=lambda path: str(path).lower().endswith(".csv"),
    description="image + report pairs: embedded synthetic chest slices with template reports, or your CSV of "
                "image,text rows (--data reports.csv; a folder: --dataset image-reports --data DIR)"))

register_command(CommandSpec(
    name="finetune", domain="text", add_arguments=finetune_arguments, run=run_finetune_cmd,
    help="fine-tune for retrieval: contrastive loss on (query, passage) pairs with in-batch negatives"))
register_command(CommandSpec(
    name="evaluate", domain="text", add_arguments=evaluate_arguments, run=run_evaluate,
    help="retrieval: nDCG@10, MRR@10, Recall@100 (exact search) on a BEIR folder; BM25 baseline; Starbucks pairs"))
register_command(CommandSpec(
    name="encode", domain="text", add_arguments=encode_arguments, run=run_encode,
    help="write embeddings of a corpus to a safetensors file"))

__all__ = ["M3AE", "M3AEConfig", "ImageReportConfig", "RetroMAE", "RetroMAEConfig", "DupMAE", "DupMAEConfig", "MLM", "MLMConfig", "Starbucks", "StarbucksConfig", "TextDataConfig"]
