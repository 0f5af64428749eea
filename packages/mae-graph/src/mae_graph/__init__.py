"""mae-graph: masked autoencoders on graphs with PyTorch Geometric.

Importing the package registers the methods (``graphmae``, ``skeletonmae``), their datasets, the paper presets
(Cora, Citeseer, MUTAG, PROTEINS, IMDB-MULTI, ...) and the probes ``logreg`` and ``svm-cv`` with mae-core.
"""
from __future__ import annotations

import dataclasses

from mae_core.registry import DatasetSpec, MethodSpec, PresetSpec, register_dataset, register_method, register_preset

from . import eval as _eval  # noqa: F401  (registers the probes)
from .data.graphs import (NodeGraphDataset, PlanetoidConfig, SBMConfig, SyntheticGraphsConfig, TUConfig,
                          make_planetoid, make_sbm, make_synthetic_graphs, make_tu)
from .data.skeleton import SkeletonActionsConfig, SkeletonFilesConfig, make_skeleton_actions, make_skeleton_files
from .methods.graphmae import GraphMAE, GraphMAEConfig
from .methods.skeletonmae import SkeletonMAE, SkeletonMAEConfig
from .viz import draw_graph_embeddings, draw_skeleton_reconstruction

__all__ = ["GraphMAE", "GraphMAEConfig", "SkeletonMAE", "SkeletonMAEConfig"]


def adapt_graphmae(model_cfg: GraphMAEConfig, data_cfg, dataset) -> GraphMAEConfig:
    """The input dimension follows the data."""
    return dataclasses.replace(model_cfg, in_dim=int(dataset.num_features))


_SBM_CACHE: dict = {}


def _build_sbm(cfg: SBMConfig, split: str) -> NodeGraphDataset:
    key = tuple(dataclasses.astuple(cfg))
    if key not in _SBM_CACHE:
        _SBM_CACHE[key] = make_sbm(cfg)
    return NodeGraphDataset(_SBM_CACHE[key], split, name="sbm")


GRAPHMAE = register_method(MethodSpec(
    name="graphmae", domain="graph", config_cls=GraphMAEConfig, model_cls=GraphMAE,
    description="masked feature reconstruction with a GNN (GAT / GIN), re-mask + SCE loss",
    default_dataset="sbm", paper="Hou et al., GraphMAE: Self-Supervised Masked Graph Autoencoders, KDD 2022",
    visualize=draw_graph_embeddings, picture="embeddings-tsne",
    train_defaults={"epochs": 300, "batch_size": 1, "lr": 1e-3, "weight_decay": 2e-4, "optimizer": "adam",
                    "betas": (0.9, 0.999), "warmup_epochs": 0.0, "min_lr": 0.0, "checkpoint_every": 500,
                    "log_every": 10},
    adapt=adapt_graphmae,
    # dropout off: the contract's same-generator check then sees only the masking generator's randomness
    tiny={"model": {"num_hidden": 16, "num_heads": 2, "num_layers": 2, "in_drop": 0.0, "attn_drop": 0.0},
          "data": {"num_nodes": 60, "num_blocks": 3, "num_features": 16, "active_features": 4,
                   "train_per_class": 5, "num_val": 10}},
))

register_dataset(DatasetSpec(
    name="sbm", domain="graph", config_cls=SBMConfig, build=_build_sbm,
    description="embedded: stochastic block model, 6 classes, block-correlated sparse features (node-level)"))
register_dataset(DatasetSpec(
    name="planetoid", domain="graph", config_cls=PlanetoidConfig, build=make_planetoid, takes_path=True,
    description="Planetoid citation graph from raw ind.<name>.* files, public split (--data PATH, --name cora)"))
register_dataset(DatasetSpec(
    name="tudataset", domain="graph", config_cls=TUConfig, build=make_tu, takes_path=True,
    description="TU graph-classification files <NAME>_A.txt ... (--data PATH, --name MUTAG); all graphs"))
register_dataset(DatasetSpec(
    name="synthetic-graphs", domain="graph", config_cls=SyntheticGraphsConfig, build=make_synthetic_graphs,
    description="embedded: 3 classes of small graphs (communities / rings / trees), one-hot degree features"))

_NODE = {"encoder": "gat", "decoder": "gat", "activation": "prelu", "num_layers": 2, "in_drop": 0.2,
         "attn_drop": 0.1, "loss_fn": "sce", "num_out_heads": 1}
_GRAPH = {"encoder": "gin", "decoder": "gin", "activation": "prelu", "norm": "batchnorm", "loss_fn": "sce",
          "in_drop": 0.2, "attn_drop": 0.1}
# scheduler on = cosine to 0 per epoch (warm-up 0); scheduler off = min_lr equal to lr (constant)
PRESETS = {
    "cora": ("planetoid", {**_NODE, "num_hidden": 512, "num_heads": 4, "mask_rate": 0.5, "replace_rate": 0.05,
                           "alpha_l": 3.0, "lr_f": 0.01, "weight_decay_f": 1e-4, "max_epoch_f": 300},
             {"name": "cora"}, {"lr": 1e-3, "weight_decay": 2e-4, "epochs": 1500, "min_lr": 0.0, "batch_size": 1},
             "GraphMAE on Cora (paper: 84.2 +- 0.4)"),
    "citeseer": ("planetoid", {**_NODE, "num_hidden": 512, "num_heads": 2, "mask_rate": 0.5, "replace_rate": 0.1,
                               "alpha_l": 1.0, "lr_f": 0.01, "weight_decay_f": 0.01, "max_epoch_f": 300},
                 {"name": "citeseer"}, {"lr": 1e-3, "weight_decay": 2e-5, "epochs": 300, "min_lr": 0.0,
                                        "batch_size": 1},
                 "GraphMAE on Citeseer (paper: 73.4 +- 0.4)"),
    "mutag": ("tudataset", {**_GRAPH, "num_hidden": 32, "num_layers": 5, "mask_rate": 0.75, "replace_rate": 0.1,
                            "alpha_l": 2.0, "pooling": "sum"},
              {"name": "MUTAG"}, {"lr": 5e-4, "min_lr": 5e-4, "weight_decay": 0.0, "epochs": 20, "batch_size": 64,
                                         "drop_last": False},
              "GraphMAE on MUTAG (paper: 88.19 +- 1.26, svm-cv)"),
    "proteins": ("tudataset", {**_GRAPH, "num_hidden": 512, "num_layers": 3, "mask_rate": 0.5, "replace_rate": 0.0,
                               "alpha_l": 1.0, "pooling": "max"},
                 {"name": "PROTEINS"}, {"lr": 1.5e-4, "min_lr": 1.5e-4, "weight_decay": 0.0, "epochs": 100,
                                        "batch_size": 32, "drop_last": False},
                 "GraphMAE on PROTEINS (paper: 75.30 +- 0.39, svm-cv)"),
    "imdb-multi": ("tudataset", {**_GRAPH, "num_hidden": 512, "num_layers": 3, "mask_rate": 0.5, "replace_rate": 0.0,
                                 "alpha_l": 1.0, "pooling": "mean"},
                   {"name": "IMDB-MULTI"}, {"lr": 1.5e-4, "min_lr": 1.5e-4, "weight_decay": 0.0, "epochs": 50,
                                            "batch_size": 32, "drop_last": False},
                   "GraphMAE on IMDB-MULTI (paper: 51.63 +- 0.52, svm-cv)"),
}
for _name, (_ds, _model, _data, _train, _desc) in PRESETS.items():
    register_preset(PresetSpec(name=_name, domain="graph", method="graphmae",
                               overrides={"dataset": _ds, "model": _model, "data": _data, "train": _train},
                               description=_desc))


# ---- SkeletonMAE ----------------------------------------------------------------------------------------------------
def adapt_skeletonmae(model_cfg: SkeletonMAEConfig, data_cfg, dataset) -> SkeletonMAEConfig:
    """Layout, channels and frame count follow the data."""
    x = dataset[0]["skeleton"]
    return dataclasses.replace(model_cfg, layout=dataset.layout.name, in_channels=int(x.shape[0]),
                               frames=int(x.shape[1]))


SKELETONMAE = register_method(MethodSpec(
    name="skeletonmae", domain="graph", config_cls=SkeletonMAEConfig, model_cls=SkeletonMAE,
    description="body-part masked joint reconstruction with a GIN per frame; spatial-temporal fine-tuning",
    default_dataset="skeleton-actions",
    paper="Yan et al., SkeletonMAE: Graph-based Masked Autoencoder for Skeleton Sequence Pre-training, ICCV 2023",
    visualize=draw_skeleton_reconstruction,
    train_defaults={"epochs": 30, "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-4, "optimizer": "adamw",
                    "warmup_epochs": 2.0, "log_every": 10},
    adapt=adapt_skeletonmae,
    tiny={"model": {"num_hidden": 16, "num_layers": 1, "temporal_dim": 16, "temporal_depth": 1,
                    "temporal_heads": 2},
          "data": {"frames": 8, "num_train": 4, "num_test": 2}},
))

register_dataset(DatasetSpec(
    name="skeleton-actions", domain="graph", config_cls=SkeletonActionsConfig, build=make_skeleton_actions,
    description="embedded: procedural skeleton actions (walk, wave, jump, squat, kick, clap), NTU-25 or COCO-17"))
register_dataset(DatasetSpec(
    name="skeleton-files", domain="graph", config_cls=SkeletonFilesConfig, build=make_skeleton_files,
    takes_path=True,
    description="NTU .skeleton folder, (N, C, T, V, M) .npy, or MSR Action3D folder / .tar.gz (cross-subject)"))
