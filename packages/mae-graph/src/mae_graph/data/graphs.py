"""Graph datasets as dict samples.

* Node-level (one graph, transductive): :class:`NodeGraphDataset` has one sample per split,
  ``{"label": y[split nodes], "graph": Data, "node_index": split nodes}``; the whole graph is one batch, so the
  mae-core trainer runs one optimizer step per epoch, and probes / fine-tuning see the split's nodes as samples.
  Embedded default: a stochastic block model whose node features are noisy block prototypes. Real data: Planetoid
  raw files (``ind.cora.*``).
* Graph-level: :class:`GraphDataset` holds a list of ``Data``; samples ``{"label": int, "graph": Data}`` batch with
  :func:`collate_graphs` into ``{"label": (B,), "graph": Batch}``. Real data: TU raw text files
  (``MUTAG_A.txt``...), node features = one-hot node labels where present, else one-hot degree capped at 400;
  then one self loop per node (as the GraphMAE code's ``remove_self_loop().add_self_loop()``).

No downloads: the readers work on the user's folder. TU files go through PyG's ``read_tu_data``; the Planetoid
pickles are read with mae-core's ``safe_unpickle`` (numpy / scipy types only) and assembled as PyG's
``read_planetoid_data`` does.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:  # PyG is imported where it is used: importing it loads torch._dynamo (seconds), which the CLI's
    from torch_geometric.data import Data  # --help and input checks do not need

from mae_core.config import field
from mae_core.data import safe_unpickle
from mae_core.errors import DataError


# ---- batching -----------------------------------------------------------------------------------------------------
def collate_graphs(samples: list[dict]) -> dict:
    """``{"label": (B,) or cat of node labels, "graph": Batch, "node_index": offset node ids}``."""
    from torch_geometric.data import Batch
    graphs = [s["graph"] for s in samples]
    if len(samples) == 1 and "node_index" in samples[0]:  # one whole graph (node-level): no copy, so the model's
        s = samples[0]                                      # per-graph caches (CSR features, self loops) persist
        return {"label": torch.as_tensor(s["label"]), "graph": s["graph"], "node_index": s["node_index"]}
    out: dict = {}
    labels = [torch.as_tensor(s["label"]) for s in samples]
    out["label"] = torch.cat([lab.reshape(-1) for lab in labels]) if labels[0].dim() > 0 else torch.stack(labels)
    out["graph"] = Batch.from_data_list(graphs)
    if "node_index" in samples[0]:
        offsets = torch.tensor([0] + [g.num_nodes for g in graphs[:-1]]).cumsum(0)
        out["node_index"] = torch.cat([s["node_index"] + o for s, o in zip(samples, offsets)])
    return out


class NodeGraphDataset(Dataset):
    """One graph; the sample is the graph with the labels and ids of the nodes of ``split`` (train / val / test /
    all). ``train_mask`` / ``val_mask`` / ``test_mask`` stay on the graph for the GraphMAE node protocol."""

    collate_fn = staticmethod(collate_graphs)

    def __init__(self, data: Data, split: str = "train", name: str = "graph"):
        self.data = data
        self.name = name
        self.split = split
        key = {"train": "train_mask", "val": "val_mask", "test": "test_mask"}.get(split)
        mask = getattr(data, key) if key else torch.ones(data.num_nodes, dtype=torch.bool)
        self.node_index = mask.nonzero().flatten()
        self.num_classes = int(data.y.max()) + 1
        self.num_features = data.x.shape[1]

    def __len__(self):
        return 1

    def __getitem__(self, i):
        if i != 0:
            raise IndexError(i)
        return {"label": self.data.y[self.node_index], "graph": self.data, "node_index": self.node_index}


class GraphDataset(Dataset):
    collate_fn = staticmethod(collate_graphs)

    def __init__(self, graphs: list[Data], name: str = "graphs"):
        self.graphs = graphs
        self.name = name
        self.labels = torch.tensor([int(g.y.reshape(-1)[0]) for g in graphs])
        self.num_classes = int(self.labels.max()) + 1 if len(graphs) else 0
        self.num_features = graphs[0].x.shape[1] if graphs else 0

    def __len__(self):
        return len(self.graphs)

    def __getitem__(self, i):
        return {"label": int(self.labels[i]), "graph": self.graphs[i]}


# ---- embedded: stochastic block model ------------------------------------------------------------------------------
@dataclass
class SBMConfig:
    num_nodes: int = field(1200, "nodes of the graph", ge=1)
    num_blocks: int = field(6, "blocks (= classes)", ge=1)
    avg_degree_in: float = field(4.0, "expected neighbours inside the node's block", ge=0)
    avg_degree_out: float = field(2.0, "expected neighbours in other blocks", ge=0)
    num_features: int = field(100, "sparse bag-of-words-like node features", ge=1)
    active_features: int = field(12, "features switched on per node", ge=1)
    feature_purity: float = field(0.15, "share of a node's active features drawn from its block's vocabulary",
                                  ge=0, le=1)
    train_per_class: int = field(20, "labelled training nodes per class (Planetoid-style split)", ge=1)
    num_val: int = field(300, "validation nodes", ge=0)
    seed: int = field(0, "seed of the generated graph")


def make_sbm(cfg: SBMConfig) -> Data:
    """A block-structured graph whose binary features share a per-block vocabulary: neither the edges nor the
    features alone give the class away cleanly, together they do (as in citation graphs)."""
    from torch_geometric.data import Data
    from torch_geometric.utils import to_undirected
    g = torch.Generator().manual_seed(cfg.seed)
    n, k = cfg.num_nodes, cfg.num_blocks
    y = torch.arange(n) % k
    y = y[torch.randperm(n, generator=g)]
    same = y[:, None] == y[None, :]
    size = n / k
    p_in = cfg.avg_degree_in / max(size - 1, 1)
    p_out = cfg.avg_degree_out / max(n - size, 1)
    prob = torch.where(same, torch.tensor(p_in), torch.tensor(p_out))
    adj = torch.rand(n, n, generator=g) < prob
    adj = torch.triu(adj, diagonal=1)
    edge_index = to_undirected(adj.nonzero().T, num_nodes=n)
    vocab = torch.rand(k, cfg.num_features, generator=g).argsort(1)[:, : cfg.num_features // k * 2]  # block words
    x = torch.zeros(n, cfg.num_features)
    for i in range(n):
        n_blk = int(round(cfg.active_features * cfg.feature_purity))
        words = vocab[y[i]][torch.randperm(vocab.shape[1], generator=g)[:n_blk]]
        rand = torch.randint(0, cfg.num_features, (cfg.active_features - n_blk,), generator=g)
        x[i, words] = 1.0
        x[i, rand] = 1.0
    train = torch.zeros(n, dtype=torch.bool)
    perm = torch.randperm(n, generator=g)
    for c in range(k):
        train[perm[y[perm] == c][: cfg.train_per_class]] = True
    rest = perm[~train[perm]]
    val = torch.zeros(n, dtype=torch.bool)
    val[rest[: cfg.num_val]] = True
    test = ~(train | val)
    return Data(x=x, edge_index=edge_index, y=y, train_mask=train, val_mask=val, test_mask=test)


# ---- Planetoid ------------------------------------------------------------------------------------------------------
@dataclass
class PlanetoidConfig:
    path: str | None = field(None, "folder with the raw Planetoid files (ind.<name>.x ...), or its parent in "
                                   "PyG's layout (root/<Name>/raw)")
    name: str = field("cora", "dataset prefix: cora, citeseer or pubmed")
    normalize_features: bool = field(True, "row-normalise the features to sum 1 (the GraphMAE code's input: PyG "
                                           "NormalizeFeatures / DGL CoraGraphDataset)")


def _find_folder(path: str | Path, probe: str, name: str) -> Path:
    """The folder holding ``probe`` among path, path/raw, path/<Name>/raw, path/<name>/raw, path/<Name>."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or directory")
    cands = [root, root / "raw"]
    for n in {name, name.lower(), name.upper(), name.capitalize()}:
        cands += [root / n / "raw", root / n]
    for c in cands:
        if (c / probe).exists():
            return c
    raise DataError(f"{root}: no {probe} found here nor in raw/ or {name}/raw/")


_PLANETOID_PICKLES = ("x", "tx", "allx", "y", "ty", "ally", "graph")


def _planetoid_matrix(obj, path: Path) -> torch.Tensor:
    """A feature / one-hot label matrix (scipy CSR or numpy array) as a float tensor, as PyG's ``read_file``."""
    import numpy as np
    import scipy.sparse as sp

    if sp.issparse(obj):
        obj = obj.toarray()
    if not (isinstance(obj, np.ndarray) and obj.ndim == 2 and (np.issubdtype(obj.dtype, np.number)
                                                              or obj.dtype == np.bool_)):
        raise DataError(f"{path}: expected a 2-D numeric matrix, found {type(obj).__name__}"
                        f"{getattr(obj, 'shape', '')}")
    return torch.from_numpy(np.asarray(obj, dtype=np.float32))


def _planetoid_graph(obj, path: Path) -> dict:
    if not (isinstance(obj, dict) and all(isinstance(k, int) and isinstance(v, list)
                                          and all(isinstance(j, int) for j in v) for k, v in obj.items())):
        raise DataError(f"{path}: expected a dict of node id -> list of neighbour ids, found {type(obj).__name__}")
    return obj


def load_planetoid(path: str | Path, name: str = "cora") -> Data:
    """The raw Planetoid files as one ``Data``, identical to PyG's ``read_planetoid_data`` (features, labels with the
    test rows reordered, public split masks, coalesced edges without self loops), but the pickles are read with
    :func:`mae_core.data.safe_pickle.safe_unpickle`: only the numpy / scipy types of the format are allowed, so a
    crafted file is refused instead of run."""
    from torch_geometric.data import Data
    from torch_geometric.io import read_txt_array
    from torch_geometric.io.planetoid import edge_index_from_dict
    from torch_geometric.utils import index_to_mask

    name = name.lower()
    if name.startswith("nell"):
        raise DataError(f"planetoid: {name!r} is not supported (cora, citeseer, pubmed)")
    folder = _find_folder(path, f"ind.{name}.x", name)
    files = {part: folder / f"ind.{name}.{part}" for part in _PLANETOID_PICKLES + ("test.index",)}
    for p in files.values():
        if not p.is_file():
            raise DataError(f"{p}: missing (a Planetoid folder holds ind.{name}.{{x,tx,allx,y,ty,ally,graph,"
                            f"test.index}})")
    x, tx, allx, y, ty, ally = (_planetoid_matrix(safe_unpickle(files[p]), files[p]) for p in _PLANETOID_PICKLES[:6])
    graph = _planetoid_graph(safe_unpickle(files["graph"]), files["graph"])
    try:
        test_index = read_txt_array(str(files["test.index"]), dtype=torch.long).reshape(-1)
        sorted_test = test_index.sort()[0]
        if name == "citeseer":  # isolated test nodes have no rows in tx / ty: zero rows in their place (as PyG)
            span = int(test_index.max() - test_index.min()) + 1
            tx_ext = tx.new_zeros(span, tx.shape[1])
            tx_ext[sorted_test - test_index.min()] = tx
            ty_ext = ty.new_zeros(span, ty.shape[1])
            ty_ext[sorted_test - test_index.min()] = ty
            tx, ty = tx_ext, ty_ext
        feats = torch.cat([allx, tx], 0)
        feats[test_index] = feats[sorted_test]
        labels = torch.cat([ally, ty], 0).max(1)[1]
        labels[test_index] = labels[sorted_test]
        n = labels.shape[0]
        data = Data(x=feats, edge_index=edge_index_from_dict(graph, num_nodes=n), y=labels)
        data.train_mask = index_to_mask(torch.arange(y.shape[0]), size=n)
        data.val_mask = index_to_mask(torch.arange(y.shape[0], y.shape[0] + 500), size=n)
        data.test_mask = index_to_mask(test_index, size=n)
    except (RuntimeError, IndexError, ValueError) as e:  # files that do not fit together
        msg = " ".join(str(e).split())
        raise DataError(f"{folder}: the Planetoid files of {name!r} do not fit together ({type(e).__name__}: "
                        f"{msg})") from None
    return data


_PLANETOID_CACHE: dict = {}


def make_planetoid(cfg: PlanetoidConfig, split: str) -> NodeGraphDataset:
    if not cfg.path:
        raise DataError("planetoid: give the folder of the raw files with --data PATH")
    key = (str(Path(cfg.path).resolve()), cfg.name.lower(), cfg.normalize_features)
    if key not in _PLANETOID_CACHE:
        data = load_planetoid(cfg.path, cfg.name)
        if cfg.normalize_features:
            data.x = data.x / data.x.sum(1, keepdim=True).clamp(min=1e-12)
        _PLANETOID_CACHE[key] = data
    return NodeGraphDataset(_PLANETOID_CACHE[key], split, name=cfg.name)


# ---- TU datasets ----------------------------------------------------------------------------------------------------
@dataclass
class TUConfig:
    path: str | None = field(None, "folder with the TU raw files (<NAME>_A.txt ...), or its parent")
    name: str = field("MUTAG", "dataset name = file prefix: MUTAG, PROTEINS, IMDB-MULTI, ...")
    max_degree: int = field(400, "one-hot degree features (graphs without node labels) are capped here", ge=0)
    self_loops: bool = field(True, "one self loop per node, as the GraphMAE code (a GIN layer then sums 2 h_i + "
                                   "neighbours)")


def tu_node_features(graphs: list[Data], node_labels: list[torch.Tensor] | None, max_degree: int) -> None:
    """GraphMAE's features: one-hot node labels where present, else one-hot degree (capped at ``max_degree``)."""
    from torch_geometric.utils import degree
    if node_labels is not None:
        dim = int(max(int(lab.max()) for lab in node_labels)) + 1
        for g, lab in zip(graphs, node_labels):
            g.x = torch.nn.functional.one_hot(lab, dim).float()
        return
    degs = [degree(g.edge_index[0], g.num_nodes).long().clamp(max=max_degree) for g in graphs]
    dim = int(max(int(d.max()) if d.numel() else 0 for d in degs)) + 1
    for g, d in zip(graphs, degs):
        g.x = torch.nn.functional.one_hot(d, dim).float()


def add_self_loops_all(graphs: list[Data]) -> None:
    """Every graph gets exactly one self loop per node (GraphMAE: ``remove_self_loop().add_self_loop()`` after the
    features are built, so a GIN layer sums ``2 h_i + sum_j h_j``)."""
    for g in graphs:
        ei = g.edge_index[:, g.edge_index[0] != g.edge_index[1]]
        loops = torch.arange(g.num_nodes, dtype=ei.dtype).repeat(2, 1)
        g.edge_index = torch.cat([ei, loops], 1)


def load_tu(path: str | Path, name: str = "MUTAG", max_degree: int = 400, self_loops: bool = True) -> list[Data]:
    from torch_geometric.data import Data
    from torch_geometric.io import read_tu_data

    folder = _find_folder(path, f"{name}_A.txt", name)
    for req in ("graph_indicator", "graph_labels"):
        if not (folder / f"{name}_{req}.txt").exists():
            raise DataError(f"{folder}: {name}_{req}.txt is missing")
    if not (folder / f"{name}_A.txt").read_bytes().strip():
        raise DataError(f"{folder / f'{name}_A.txt'}: no edges at all, so no graph structure to learn from (a TU "
                        "edge list holds one 'source, target' line per edge)")
    try:
        data, slices, sizes = read_tu_data(str(folder), name)
    except Exception as e:
        raise DataError(f"{folder}: cannot read the TU files of {name!r} ({type(e).__name__}: {e})") from None
    n_graphs = len(slices["y"]) - 1
    ns, es = slices["x"] if "x" in slices else None, slices["edge_index"]
    if len(es) < n_graphs + 1:  # PyG's slices end at the last graph with an edge: the rest have none
        es = torch.cat([es, es[-1:].repeat(n_graphs + 1 - len(es))])
    if ns is None:  # no node features at all: node counts from the graph indicator
        ind = torch.tensor([int(v) for v in (folder / f"{name}_graph_indicator.txt").read_text().split()]) - 1
        ns = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(ind, minlength=n_graphs).cumsum(0)])
    n_lab = sizes.get("num_node_labels", 0)
    n_att = sizes.get("num_node_attributes", 0)
    graphs, labels = [], []
    y = data.y
    if y.min() < 0 or y.min() > 0:  # e.g. MUTAG {-1, 1}, IMDB {1, 2, 3}: relabel to 0..C-1
        y = torch.unique(y, return_inverse=True)[1]
    for i in range(n_graphs):
        n0, n1 = int(ns[i]), int(ns[i + 1])
        ei = data.edge_index[:, int(es[i]):int(es[i + 1])]
        g = Data(edge_index=ei, y=y[i:i + 1], num_nodes=n1 - n0)
        if n_lab:
            labels.append(data.x[n0:n1, n_att:n_att + n_lab].argmax(1))
        graphs.append(g)
    no_edges = [i for i, g in enumerate(graphs) if g.edge_index.shape[1] == 0]
    if no_edges:
        print(f"warning: {folder}: {len(no_edges)} of {n_graphs} {name} graphs have no edges (isolated nodes only; "
              f"first: graph {no_edges[0] + 1})", file=sys.stderr)
    tu_node_features(graphs, labels if n_lab else None, max_degree)
    if self_loops:
        add_self_loops_all(graphs)
    return graphs


_TU_CACHE: dict = {}


def make_tu(cfg: TUConfig, split: str) -> GraphDataset:
    """All graphs in both splits: GraphMAE pretrains on every graph and evaluates with 10-fold CV (``--probe svm``)."""
    if not cfg.path:
        raise DataError("tudataset: give the folder of the raw files with --data PATH")
    key = (str(Path(cfg.path).resolve()), cfg.name, cfg.max_degree, cfg.self_loops)
    if key not in _TU_CACHE:
        _TU_CACHE[key] = load_tu(cfg.path, cfg.name, cfg.max_degree, cfg.self_loops)
    return GraphDataset(_TU_CACHE[key], name=cfg.name)


# ---- embedded: small synthetic graph classification -----------------------------------------------------------------
@dataclass
class SyntheticGraphsConfig:
    num_graphs: int = field(200, "graphs (half per class... per class share 1 / num_classes)", ge=1)
    min_nodes: int = field(12, "smallest graph", ge=1)
    max_nodes: int = field(24, "largest graph", ge=1)
    max_degree: int = field(10, "one-hot degree features capped here", ge=0)
    seed: int = field(0, "seed of the generated graphs")

    def validate(self, where: str = "data") -> None:
        from mae_core.errors import ConfigError

        if self.min_nodes > self.max_nodes:
            raise ConfigError(f"{where}: min_nodes ({self.min_nodes}) must be <= max_nodes ({self.max_nodes})")


def make_synthetic_graphs(cfg: SyntheticGraphsConfig, split: str) -> GraphDataset:
    """Three classes of small graphs with the same node count range: two-community graphs, rings with chords and
    trees; node features are one-hot degrees (as for TU graphs without labels). Train = first 80 %, test = rest."""
    from torch_geometric.data import Data
    from torch_geometric.utils import to_undirected
    g = torch.Generator().manual_seed(cfg.seed)
    graphs = []
    for i in range(cfg.num_graphs):
        c = i % 3
        n = int(torch.randint(cfg.min_nodes, cfg.max_nodes + 1, (1,), generator=g))
        if c == 0:  # two dense communities
            half = n // 2
            blk = (torch.arange(n) < half)
            p = torch.where(blk[:, None] == blk[None, :], torch.tensor(0.5), torch.tensor(0.03))
            adj = torch.triu(torch.rand(n, n, generator=g) < p, 1)
            ei = adj.nonzero().T
        elif c == 1:  # ring with a few chords
            src = torch.arange(n)
            ei = torch.stack([src, (src + 1) % n])
            k = max(1, n // 6)
            ch = torch.randint(0, n, (2, k), generator=g)
            ei = torch.cat([ei, ch], 1)
        else:  # random tree
            parents = torch.stack([torch.randint(0, j, (1,), generator=g) for j in range(1, n)]).flatten()
            ei = torch.stack([torch.arange(1, n), parents])
        ei = to_undirected(ei[:, ei[0] != ei[1]], num_nodes=n)
        graphs.append(Data(edge_index=ei, y=torch.tensor([c]), num_nodes=n))
    tu_node_features(graphs, None, cfg.max_degree)
    dim = max(gr.x.shape[1] for gr in graphs)
    for gr in graphs:
        gr.x = torch.nn.functional.pad(gr.x, (0, dim - gr.x.shape[1]))
    add_self_loops_all(graphs)
    cut = int(0.8 * len(graphs))
    return GraphDataset(graphs[:cut] if split == "train" else graphs[cut:], name="synthetic-graphs")
