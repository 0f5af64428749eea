"""mae-graph: masked autoencoders on graphs with PyTorch Geometric.

Importing the package registers the methods (``graphmae``, ``skeletonmae``), their datasets, the paper presets
(Cora, Citeseer, MUTAG, PROTEINS, IMDB-MULTI, ...) and the probes ``logreg`` and ``svm-cv`` with mae-core.
"""
from __future__ import annotations

import dataclasses

from mae_core.registry import DatasetSpec, MethodSpec, PresetSpec, register_dataset, register_method, register_preset

from . import eval as _eval  # noqa: F401  (registers the probes)
from . import protocol as _protocol  # noqa: F401  (registers the `seeds` command)
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
    name="graphmae", domain="graph", default=True, config_cls=GraphMAEConfig, model_cls=GraphMAE,
    description="masked feature reconstruction with a GNN (GAT / GIN), re-mask + SCE loss",
    default_dataset="sbm", paper="Hou et al., GraphMAE: Self-Supervised Masked Graph Autoencoders, KDD 2022",
    visualize=draw_graph_embeddings, picture="embeddings-tsne",
    train_defaults={"epochs": 300, "batch_size": 1, "lr": 1e-3, "weight_decay": 2e-4, "optimizer": "adam",
                    "betas": (0.9, 0.999), "warmup_epochs": 0.0, "min_lr": 0.0, "checkpoint_every": 500,
                    "log_every": 10},
    # the embedded SBM: 300 epochs left the probes within 3 points of random init; 3000 (about 2 minutes on one
    # thread) give +5 / +8 points (docs/benchmarks.md, "What the no-argument runs show")
    default_dataset_train={"epochs": 3000, "checkpoint_every": 1000, "log_every": 50},
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

# Every entry of the authors' configs.yml (THUDM/GraphMAE), read against their argparse defaults (graphmae/utils.py
# build_args: lr 0.005, weight_decay 5e-4, num_heads 4, alpha_l 2, replace_rate 0, in_drop 0.2, attn_drop 0.1,
# pooling mean, residual / concat_hidden off, drop_edge_rate 0): a key the YAML leaves out takes that default, and a
# key the code never reads is ignored (COLLAB's `pool: max` and NCI1's `pool: sum`: the code reads `pooling`, so
# both ran with mean pooling; NCI1 and COLLAB set no weight decay, NCI1 so ran with 5e-4).
# scheduler on = cosine to 0 per epoch (warm-up 0); scheduler off = min_lr equal to lr (constant)
_NODE = {"encoder": "gat", "decoder": "gat", "activation": "prelu", "num_layers": 2, "in_drop": 0.2,
         "attn_drop": 0.1, "loss_fn": "sce", "num_out_heads": 1}
_GRAPH = {"encoder": "gin", "decoder": "gin", "activation": "prelu", "norm": "batchnorm", "loss_fn": "sce",
          "in_drop": 0.2, "attn_drop": 0.1, "replace_rate": 0.0, "alpha_l": 2.0, "pooling": "mean"}
_TU = {"weight_decay": 0.0, "drop_last": False}


def _tu(lr: float, epochs: int, batch: int, scheduler: bool, **extra) -> dict:
    return {**_TU, "lr": lr, "min_lr": 0.0 if scheduler else lr, "epochs": epochs, "batch_size": batch, **extra}


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
    "pubmed": ("planetoid", {**_NODE, "num_hidden": 1024, "num_heads": 4, "mask_rate": 0.75, "replace_rate": 0.0,
                             "alpha_l": 3.0, "lr_f": 0.01, "weight_decay_f": 1e-4, "max_epoch_f": 300},
               {"name": "pubmed"}, {"lr": 1e-3, "weight_decay": 1e-5, "epochs": 1000, "min_lr": 0.0, "batch_size": 1},
               "GraphMAE on PubMed (paper: 81.1 +- 0.4)"),
    # node-level sets with no loader here (give --dataset / --data of your own): the model and training recipe only
    "ogbn-arxiv": (None, {**_NODE, "num_hidden": 1024, "num_heads": 4, "num_layers": 3, "mask_rate": 0.5,
                          "replace_rate": 0.0, "alpha_l": 3.0, "drop_edge_rate": 0.5, "norm": "layernorm",
                          "lr_f": 0.01, "weight_decay_f": 5e-4, "max_epoch_f": 600},
                   {}, {"lr": 1e-3, "weight_decay": 0.0, "epochs": 1000, "min_lr": 0.0, "batch_size": 1},
                   "GraphMAE recipe of ogbn-arxiv (paper: 71.75 +- 0.17; no loader here: --dataset / --data)"),
    "ppi": (None, {**_NODE, "num_hidden": 1024, "num_heads": 4, "num_layers": 3, "mask_rate": 0.5,
                   "replace_rate": 0.1, "alpha_l": 3.0, "norm": "layernorm", "residual": True,
                   "lr_f": 0.005, "weight_decay_f": 0.0, "max_epoch_f": 2000},
            {}, {"lr": 1e-4, "weight_decay": 0.0, "epochs": 1000, "min_lr": 0.0},
            "GraphMAE recipe of PPI (paper: 74.50 +- 0.29 micro-F1; no loader here: --dataset / --data)"),
    "reddit": (None, {**_NODE, "num_hidden": 512, "num_heads": 2, "num_layers": 4, "mask_rate": 0.75,
                      "replace_rate": 0.15, "alpha_l": 3.0, "drop_edge_rate": 0.5, "norm": "layernorm",
                      "residual": True, "lr_f": 0.005, "weight_decay_f": 0.0, "max_epoch_f": 500},
               {}, {"lr": 1e-3, "weight_decay": 2e-4, "epochs": 500, "min_lr": 0.0},
               "GraphMAE recipe of Reddit (paper: 96.01 +- 0.08; no loader here: --dataset / --data)"),
    "mutag": ("tudataset", {**_GRAPH, "num_hidden": 32, "num_layers": 5, "mask_rate": 0.75, "replace_rate": 0.1,
                            "alpha_l": 2.0, "pooling": "sum"},
              {"name": "MUTAG"}, _tu(5e-4, 20, 64, False), "GraphMAE on MUTAG (paper: 88.19 +- 1.26, svm-cv)"),
    "proteins": ("tudataset", {**_GRAPH, "num_hidden": 512, "num_layers": 3, "mask_rate": 0.5, "alpha_l": 1.0,
                               "pooling": "max"},
                 {"name": "PROTEINS"}, _tu(1.5e-4, 100, 32, False),
                 "GraphMAE on PROTEINS (paper: 75.30 +- 0.39, svm-cv)"),
    "imdb-multi": ("tudataset", {**_GRAPH, "num_hidden": 512, "num_layers": 3, "mask_rate": 0.5, "alpha_l": 1.0},
                   {"name": "IMDB-MULTI"}, _tu(1.5e-4, 50, 32, False),
                   "GraphMAE on IMDB-MULTI (paper: 51.63 +- 0.52, svm-cv)"),
    "imdb-binary": ("tudataset", {**_GRAPH, "num_hidden": 512, "num_layers": 2, "mask_rate": 0.5, "alpha_l": 1.0},
                    {"name": "IMDB-BINARY"}, _tu(1.5e-4, 60, 32, False),
                    "GraphMAE on IMDB-BINARY (paper: 75.52 +- 0.66, svm-cv)"),
    "collab": ("tudataset", {**_GRAPH, "num_hidden": 256, "num_layers": 2, "mask_rate": 0.75, "activation": "relu"},
               {"name": "COLLAB"}, _tu(1.5e-4, 20, 32, True),
               "GraphMAE on COLLAB (paper: 80.32 +- 0.46, svm-cv; mean pooling: the YAML's `pool` is not read)"),
    "reddit-binary": ("tudataset", {**_GRAPH, "num_hidden": 512, "num_layers": 2, "mask_rate": 0.75,
                                    "replace_rate": 0.1, "norm": "layernorm", "pooling": "sum"},
                      {"name": "REDDIT-BINARY"}, _tu(1.5e-4, 100, 8, True),
                      "GraphMAE on REDDIT-BINARY (paper: 88.01 +- 0.19, svm-cv)"),
    "nci1": ("tudataset", {**_GRAPH, "num_hidden": 512, "num_layers": 2, "mask_rate": 0.25, "replace_rate": 0.1},
             {"name": "NCI1"}, _tu(1e-3, 300, 16, True, weight_decay=5e-4),
             "GraphMAE on NCI1 (paper: 80.40 +- 0.30, svm-cv; weight decay 5e-4 and mean pooling as the code ran)"),
}
for _name, (_ds, _model, _data, _train, _desc) in PRESETS.items():
    _over = {"model": _model, "data": _data, "train": _train, **({"dataset": _ds} if _ds else {})}
    register_preset(PresetSpec(name=_name, domain="graph", method="graphmae", overrides=_over, description=_desc))


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


# ---- trajectory MAE (VectorNet on driving scenes) --------------------------------------------------------------------
from . import predict as _predict  # noqa: E402,F401  (registers the `traj-predict` command)
from .data.driving import (DrivingCSVConfig, DrivingScenesConfig, make_driving_csv,  # noqa: E402
                           make_driving_scenes)
from .methods.traj_mae import TrajMAE, TrajMAEConfig  # noqa: E402


def adapt_traj_mae(model_cfg: TrajMAEConfig, data_cfg, dataset) -> TrajMAEConfig:
    """Vector features and future length follow the data."""
    s = dataset[0]
    return dataclasses.replace(model_cfg, in_features=int(s["vectors"].shape[-1]),
                               future_steps=int(s["future"].shape[0]))


TRAJ_MAE = register_method(MethodSpec(
    name="traj-mae", domain="graph", config_cls=TrajMAEConfig, model_cls=TrajMAE,
    description="VectorNet pretrained by map reconstruction (50 % polylines dropped) or masked focal-history "
                "reconstruction (6 modes, winner-take-all), drawn per scene; traj-predict fine-tunes it",
    default_dataset="driving-scenes",
    paper="Li et al., Pre-training on Synthetic Driving Data for Trajectory Prediction, IROS 2024",
    visualize=_predict.draw_pretext, picture="pretext-reconstruction",
    train_defaults={"epochs": 4, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.01, "optimizer": "adamw",
                    "warmup_epochs": 0.5, "log_every": 20},
    adapt=adapt_traj_mae,
    tiny={"model": {"hidden": 16, "subgraph_depth": 1, "modes": 3},
          "data": {"num_train": 4, "num_test": 2, "max_agents": 2, "max_lanes": 4}},
))
register_dataset(DatasetSpec(
    name="driving-scenes", domain="graph", config_cls=DrivingScenesConfig, build=make_driving_scenes,
    description="embedded: procedural intersections, IDM car-following + lane keeping, 2 s history / 3 s future, "
                "optional map augmentation (polylines for traj-mae)"))
register_dataset(DatasetSpec(
    name="driving-csv", domain="graph", config_cls=DrivingCSVConfig, build=make_driving_csv, takes_path=True,
    accepts=lambda p: __import__("os").path.isdir(p) and any(str(f).endswith(".csv") for f in
                                                             __import__("os").listdir(p)),
    description="Argoverse-style forecasting CSVs (TIMESTAMP, TRACK_ID, OBJECT_TYPE, X, Y) + optional lanes.csv"))
