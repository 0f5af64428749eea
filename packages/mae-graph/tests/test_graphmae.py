import math
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch, Data

from mae_core.errors import DataError
from mae_core.testing import loss_falls
from mae_core.train.trainer import move_to
from mae_graph.data.graphs import (SBMConfig, SyntheticGraphsConfig, collate_graphs, load_planetoid, load_tu,
                                   make_sbm, make_synthetic_graphs)
from mae_graph.eval import node_protocol
from mae_graph.gnn import sce_loss
from mae_graph.methods.graphmae import GraphMAE, GraphMAEConfig
from mae_core.eval.svm_cv import svm_cv

DATA = Path(__file__).parents[3] / ".." / "shared" / "data"


def tiny_sbm(**kw):
    base = dict(num_nodes=180, num_blocks=3, num_features=30, active_features=6, feature_purity=0.5,
                avg_degree_in=5.0, avg_degree_out=0.5, train_per_class=10, num_val=40)
    base.update(kw)
    return make_sbm(SBMConfig(**base))


def tiny_model(in_dim, **kw):
    base = dict(in_dim=in_dim, num_hidden=16, num_heads=2, num_layers=2, mask_rate=0.5, replace_rate=0.2,
                max_epoch_f=60, probe_seeds=2)
    base.update(kw)
    return GraphMAE(GraphMAEConfig(**base))


def test_masking_counts_and_replace_split():
    torch.manual_seed(0)
    n, d = 101, 8
    x = torch.randn(n, d)
    m = tiny_model(d, mask_rate=0.5, replace_rate=0.2)
    with torch.no_grad():
        m.enc_mask_token.fill_(7.0)
    out, mask, token, noise = m.mask_nodes(x, torch.Generator().manual_seed(3))
    n_mask = n - int(n * 0.5)
    assert int(mask.sum()) == n_mask
    assert len(noise) == int(0.2 * n_mask) and len(token) == n_mask - len(noise)
    assert set(token.tolist()) | set(noise.tolist()) == set(mask.nonzero().flatten().tolist())
    assert not set(token.tolist()) & set(noise.tolist())
    assert torch.all(out[token] == 7.0)  # zeros + [MASK] token
    for i in noise.tolist():  # features of some node of the graph, not the token
        assert (x == out[i]).all(1).any()
    assert torch.equal(out[~mask], x[~mask])
    out2, mask2, _, _ = m.mask_nodes(x, torch.Generator().manual_seed(3))
    assert torch.equal(mask, mask2) and torch.equal(out, out2)
    _, _, token0, noise0 = tiny_model(d, replace_rate=0.0).mask_nodes(x, torch.Generator().manual_seed(3))
    assert len(noise0) == 0 and len(token0) == n_mask


def test_remask_zeroes_masked_rows():
    data = tiny_sbm()
    m = tiny_model(data.x.shape[1])
    seen = {}

    def hook(mod, args):
        seen["rep"] = args[0].detach()

    m.decoder.register_forward_pre_hook(hook)
    out = m({"graph": data}, generator=torch.Generator().manual_seed(0))
    rep, mask = seen["rep"], out.mask.bool()
    assert torch.all(rep[mask] == 0)
    assert (rep[~mask].abs().sum(1) > 0).all()
    assert m.encoder_to_decoder.bias is None


def test_sce_values():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(sce_loss(x, x * 3, alpha=3)) == pytest.approx(0.0, abs=1e-6)  # scale invariant
    assert float(sce_loss(x, x.flip(1), alpha=2)) == pytest.approx(1.0)  # orthogonal: (1 - 0) ** 2
    assert float(sce_loss(x, -x, alpha=2)) == pytest.approx(4.0)  # opposite: (1 + 1) ** 2
    a, b = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    assert float(sce_loss(a, b, alpha=3)) == pytest.approx((1 - 1 / math.sqrt(2)) ** 3)


def test_loss_falls_node_level():
    data = tiny_sbm()
    m = tiny_model(data.x.shape[1], in_drop=0.0, attn_drop=0.0, replace_rate=0.0, alpha_l=1.0)
    first, last = loss_falls(m, {"graph": data}, steps=40, lr=5e-3)
    assert last < 0.8 * first


def test_loss_falls_graph_level_gin():
    ds = make_synthetic_graphs(SyntheticGraphsConfig(num_graphs=30), "train")
    batch = collate_graphs([ds[i] for i in range(len(ds))])
    m = tiny_model(ds.num_features, encoder="gin", decoder="gin", norm="batchnorm", in_drop=0.0, alpha_l=1.0)
    first, last = loss_falls(m, batch, steps=40, lr=5e-3)
    assert last < 0.8 * first
    assert m.encode(batch).shape == (len(ds), 16)


def test_node_probe_beats_chance_after_pretraining():
    torch.manual_seed(0)
    data = tiny_sbm()
    m = tiny_model(data.x.shape[1])
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        m.train()
        loss = m({"graph": data}, g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    res = node_protocol(m, data, seeds=range(2), epochs=60)
    assert res["acc"] > 1 / 3 + 0.25
    assert res["seeds"] == 2 and 0 <= res["std"] < 0.2


def test_svm_cv_separates_graph_classes():
    ds = make_synthetic_graphs(SyntheticGraphsConfig(num_graphs=45), "train")
    m = tiny_model(ds.num_features, encoder="gin", decoder="gin", norm="batchnorm", pooling="sum").eval()
    batch = collate_graphs([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        feats = m.encode(batch)
    res = svm_cv(feats, batch["label"], folds=3, inner_folds=2)
    assert res["acc"] > 0.6 and res["folds"] == 3


def test_move_to_handles_pyg_batches():
    b = collate_graphs([{"label": 0, "graph": Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]))}])
    moved = move_to(b, "cpu")
    assert isinstance(moved["graph"], Batch) and moved["graph"].x.shape == (3, 2)


def _write_tu(folder: Path, name="TOY"):
    folder.mkdir(parents=True)
    # two graphs: a triangle (nodes 1-3) and an edge (nodes 4-5)
    (folder / f"{name}_A.txt").write_text("1, 2\n2, 1\n2, 3\n3, 2\n1, 3\n3, 1\n4, 5\n5, 4\n")
    (folder / f"{name}_graph_indicator.txt").write_text("1\n1\n1\n2\n2\n")
    (folder / f"{name}_graph_labels.txt").write_text("-1\n1\n")
    return folder


def test_tu_reader_degree_and_label_features(tmp_path):
    _write_tu(tmp_path / "TOY")
    graphs = load_tu(tmp_path, "TOY")
    assert [g.num_nodes for g in graphs] == [3, 2] and [int(g.y) for g in graphs] == [0, 1]
    assert torch.equal(graphs[0].x.argmax(1), torch.tensor([2, 2, 2]))  # one-hot degree
    (tmp_path / "TOY" / "TOY_node_labels.txt").write_text("0\n1\n1\n2\n0\n")
    graphs = load_tu(tmp_path / "TOY", "TOY")
    assert graphs[0].x.shape == (3, 3) and torch.equal(graphs[1].x.argmax(1), torch.tensor([2, 0]))
    loops = [int((g.edge_index[0] == g.edge_index[1]).sum()) for g in graphs]
    assert loops == [3, 2] and graphs[0].edge_index.shape[1] == 6 + 3  # one self loop per node added
    plain = load_tu(tmp_path / "TOY", "TOY", self_loops=False)
    assert plain[0].edge_index.shape[1] == 6
    with pytest.raises(DataError, match="OTHER_A.txt"):
        load_tu(tmp_path, "OTHER")


def _assert_same_graph(a, b):
    assert set(a.keys()) == set(b.keys())
    assert all(torch.equal(a[k], b[k]) for k in b.keys())


@pytest.mark.skipif(not (DATA / "planetoid").exists(), reason="shared Cora copy not present")
def test_real_cora_reads():
    from torch_geometric.io import read_planetoid_data

    d = load_planetoid(DATA / "planetoid", "cora")  # the Python 2 pickles of the Planetoid release
    assert d.num_nodes == 2708 and d.x.shape[1] == 1433
    assert (int(d.train_mask.sum()), int(d.val_mask.sum()), int(d.test_mask.sum())) == (140, 500, 1000)
    _assert_same_graph(d, read_planetoid_data(str(DATA / "planetoid" / "raw"), "cora"))  # PyG's (unrestricted) reader


def write_planetoid(folder: Path, name: str, test_ids: list[int], seed: int = 0) -> Path:
    """A small Planetoid set as the release stores it: CSR features, one-hot labels, a defaultdict graph; ``test_ids``
    count from the first test node (after the 504 labelled + unlabelled ones: the public split's 500 validation nodes
    follow the training nodes)."""
    import pickle
    from collections import defaultdict

    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n_all, n_train, f, c = 504, 4, 5, 3
    test_ids = [n_all + i for i in test_ids]
    n = n_all + max(test_ids) - min(test_ids) + 1
    feats = sp.csr_matrix((rng.random((n_all + len(test_ids), f)) < 0.5).astype(np.float32))
    onehot = np.eye(c, dtype=np.int32)[rng.integers(0, c, n_all + len(test_ids))]
    graph = defaultdict(list)
    for i in range(n):
        graph[i] = sorted({int(j) for j in rng.integers(0, n, 2)})
    parts = {"x": feats[:n_train], "y": onehot[:n_train], "allx": feats[:n_all], "ally": onehot[:n_all],
             "tx": feats[n_all:], "ty": onehot[n_all:], "graph": graph}
    folder.mkdir(parents=True, exist_ok=True)
    for part, obj in parts.items():
        (folder / f"ind.{name}.{part}").write_bytes(pickle.dumps(obj, protocol=4))
    (folder / f"ind.{name}.test.index").write_text("".join(f"{i}\n" for i in test_ids))
    return folder


@pytest.mark.parametrize("name,test_ids", [("cora", [2, 0, 3, 1]), ("citeseer", [1, 4, 0, 6])])
def test_planetoid_reader_equals_pyg(tmp_path, name, test_ids):
    """Our restricted reader assembles the same graph as PyG's read_planetoid_data (citeseer: isolated test nodes
    without rows become zero rows)."""
    from torch_geometric.io import read_planetoid_data

    folder = write_planetoid(tmp_path / "raw", name, test_ids)
    ours = load_planetoid(tmp_path, name)
    _assert_same_graph(ours, read_planetoid_data(str(folder), name))
    assert ours.num_nodes == 504 + max(test_ids) + 1 and int(ours.test_mask.sum()) == len(test_ids)


@pytest.mark.parametrize("part", ["graph", "allx"])
def test_planetoid_reader_refuses_code(tmp_path, part):
    """mae-graph pretrain --dataset planetoid --data DIR with a crafted pickle: refused on one line naming the file
    and the global, and the payload never runs."""
    import pickle

    from mae_core.testing import MarkerPayload

    folder = write_planetoid(tmp_path, "cora", [2, 0, 3, 1])
    marker = tmp_path / "ran"
    evil = folder / f"ind.cora.{part}"
    evil.write_bytes(pickle.dumps({0: [1], 1: [MarkerPayload(marker)]}, protocol=2))
    with pytest.raises(DataError) as err:
        load_planetoid(tmp_path, "cora")
    msg = str(err.value)
    assert "\n" not in msg and str(evil) in msg and "exec" in msg
    assert not marker.exists()
    with pytest.raises(DataError, match="refused to unpickle"):  # through the CLI's dataset factory too
        from mae_graph.data.graphs import PlanetoidConfig, make_planetoid
        make_planetoid(PlanetoidConfig(path=str(tmp_path), name="cora"), "train")
    assert not marker.exists()


@pytest.mark.skipif(not (DATA / "tudataset").exists(), reason="shared TU copies not present")
def test_real_tu_reads():
    mutag = load_tu(DATA / "tudataset", "MUTAG")
    assert len(mutag) == 188 and mutag[0].x.shape[1] == 7
    assert sorted(set(int(g.y) for g in mutag)) == [0, 1]
    imdb = load_tu(DATA / "tudataset", "IMDB-MULTI")
    assert len(imdb) == 1500 and all(g.x.sum() == g.num_nodes for g in imdb[:20])  # one-hot degree


def test_gat_layer_matches_pyg_gatconv():
    from torch_geometric.nn import GATConv

    from mae_graph.gnn import GATLayer, edge_softmax, GraphEdges

    torch.manual_seed(0)
    n, d, heads, c = 30, 12, 3, 5
    ei = torch.randint(0, n, (2, 90))
    x = torch.randn(n, d)
    ours = GATLayer(d, c, heads).eval()
    ref = GATConv(d, c, heads=heads, add_self_loops=True).eval()
    with torch.no_grad():
        ref.lin.weight.copy_(ours.weight)
        ref.att_src.copy_(ours.att_src)
        ref.att_dst.copy_(ours.att_dst)
        ref.bias.copy_(torch.randn(heads * c))
        ours.bias.copy_(ref.bias)
    edges = GraphEdges(ei, n)
    assert int((edges.src == edges.dst).sum()) == n  # exactly one self loop per node
    expected = ref(x, ei)
    assert torch.allclose(ours(x, edges), expected, atol=1e-5)
    # gradients through the one-product multi-head aggregation (block-diagonal structure, its transpose and the
    # sampled product for the attention) equal PyG's message passing
    xg = x.clone().requires_grad_(True)
    g_ours = torch.autograd.grad(ours(xg, edges).square().sum(), [xg, ours.weight, ours.att_src, ours.att_dst])
    g_ref = torch.autograd.grad(ref(xg, ei).square().sum(), [xg, ref.lin.weight, ref.att_src, ref.att_dst])
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(g_ours, g_ref))
    rows = torch.tensor([3, 7, 8, 29])
    assert torch.allclose(ours(x, edges, rows=rows), expected[rows], atol=1e-5)
    assert torch.allclose(ours(x.to_sparse_csr(), edges, proj=ours.project(x.to_sparse_csr())), expected, atol=1e-5)
    a = edge_softmax(torch.randn(len(edges), 2), edges.dst, n)
    assert torch.allclose(torch.zeros(n, 2).index_add_(0, edges.dst, a), torch.ones(n, 2), atol=1e-6)


def test_widening_gat_layer_aggregates_before_projecting():
    from mae_graph.gnn import GATLayer, GraphEdges

    torch.manual_seed(1)
    n, d, out = 25, 4, 40  # in_dim < out: the decoder case (hidden -> input features)
    layer = GATLayer(d, out, 1).eval()
    edges = GraphEdges(torch.randint(0, n, (2, 60)), n)
    x = torch.randn(n, d, requires_grad=True)
    rows = torch.tensor([0, 5, 6, 24])
    full = layer(x, edges)[rows]
    fast = layer(x, edges, rows=rows)  # aggregate-first path
    assert torch.allclose(fast, full, atol=1e-5)
    g1 = torch.autograd.grad(full.square().sum(), [x, layer.weight])
    g2 = torch.autograd.grad(fast.square().sum(), [x, layer.weight])
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(g1, g2))


def test_aggregate_between_equals_aggregation_of_the_zero_padded_input():
    from mae_graph.gnn import GATLayer, GraphEdges

    torch.manual_seed(2)
    n, d, out = 30, 5, 12
    layer = GATLayer(d, out, 1)
    layer.att_src.data.normal_()
    layer.att_dst.data.normal_()
    edges = GraphEdges(torch.randint(0, n, (2, 90)), n)
    masked = torch.tensor([1, 2, 7, 8, 9, 15, 20, 29])
    kept = torch.tensor([i for i in range(n) if i not in set(masked.tolist())])
    x_kept = torch.randn(len(kept), d, requires_grad=True)
    layer.eval()  # no attention dropout: both paths must give the same numbers
    padded = torch.zeros(n, d).index_copy(0, kept, x_kept)  # the re-masked decoder input
    full = layer.aggregate_inputs(padded, edges, masked)[:, 0]
    fast = layer.aggregate_between(x_kept, kept, masked, edges)
    assert fast.shape == (len(masked), d) and torch.allclose(fast, full, atol=1e-6)
    w = torch.randn(len(masked), d)
    g1 = torch.autograd.grad((full * w).sum(), [x_kept, layer.weight, layer.att_src, layer.att_dst])
    g2 = torch.autograd.grad((fast * w).sum(), [x_kept, layer.weight, layer.att_src, layer.att_dst])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g1, g2))


def test_sparse_first_layer_equals_dense_path():
    data = tiny_sbm(num_features=200, active_features=4)  # 2 % nonzero: bag-of-words like
    data.x = data.x / data.x.sum(1, keepdim=True)
    torch.manual_seed(0)
    sparse = tiny_model(200, in_drop=0.0, attn_drop=0.0, replace_rate=0.2, sparse_input=0.1)
    dense = tiny_model(200, in_drop=0.0, attn_drop=0.0, replace_rate=0.2, sparse_input=0.0)
    dense.load_state_dict(sparse.state_dict())
    with torch.no_grad():
        sparse.enc_mask_token.normal_()
        dense.enc_mask_token.copy_(sparse.enc_mask_token)
    assert sparse.sparse_features(data.x) is not None and dense.sparse_features(data.x) is None
    o1 = sparse({"graph": data}, generator=torch.Generator().manual_seed(5))
    o2 = dense({"graph": data}, generator=torch.Generator().manual_seed(5))
    assert torch.equal(o1.mask, o2.mask) and torch.equal(o1.extra["noise_nodes"], o2.extra["noise_nodes"])
    assert sparse.fused_decoder()  # 16 hidden -> 200 features: fused decoder + SCE
    assert o1.pred is None and o2.pred is not None  # the fused path does not form the reconstruction in training
    assert torch.allclose(o1.loss, o2.loss, atol=1e-6)
    o1.loss.backward()
    o2.loss.backward()
    for (name, p1), p2 in zip(sparse.named_parameters(), dense.parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-5, rtol=1e-4), name
    sparse.eval(), dense.eval()
    with torch.no_grad():
        assert torch.allclose(sparse.embed({"graph": data}), dense.embed({"graph": data}), atol=1e-5)
        e1 = sparse({"graph": data}, generator=torch.Generator().manual_seed(6))
        e2 = dense({"graph": data}, generator=torch.Generator().manual_seed(6))
    assert torch.allclose(e1.loss, e2.loss, atol=1e-6) and torch.allclose(e1.pred, e2.pred, atol=1e-5)
    assert torch.equal(e1.target, e2.target)


def test_token_dropout_gives_each_mask_row_its_own_dropout():
    from mae_graph.data.graphs import collate_graphs
    from mae_graph.methods.graphmae import GraphMAE, GraphMAEConfig

    data = tiny_sbm()
    torch.manual_seed(0)
    x = (torch.rand(data.num_nodes, 60) < 0.05).float()
    cfg = dict(in_dim=60, num_hidden=16, num_heads=2, mask_rate=0.5, replace_rate=0.0, in_drop=0.3,
               sparse_input=0.5)
    plain, exact = GraphMAE(GraphMAEConfig(**cfg)), GraphMAE(GraphMAEConfig(**cfg, token_dropout=True))
    exact.load_state_dict(plain.state_dict())
    with torch.no_grad():
        for m in (plain, exact):
            m.enc_mask_token.normal_(generator=torch.Generator().manual_seed(1))
    xs = x.to_sparse_csr()
    token_nodes = torch.arange(0, data.num_nodes, 2)
    none = token_nodes[:0]
    rows_plain = plain.corrupted_projection(xs, token_nodes, none, none)[token_nodes]
    rows_exact = exact.corrupted_projection(xs, token_nodes, none, none)[token_nodes]
    want = plain.encoder.layers[0].project(plain.enc_mask_token)
    assert torch.allclose(rows_plain, want.expand_as(rows_plain))  # all [MASK] rows identical
    assert (rows_exact - rows_exact[0]).abs().amax() > 1e-3  # each row dropped out on its own
    # unbiased: the mean over many rows approaches token @ W (1 / (1 - p) scaling)
    many = torch.arange(data.num_nodes).repeat(40)
    exact.train()
    big = torch.sparse_csr_tensor(torch.zeros(len(many) + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                                  torch.zeros(0), (len(many), 60))
    mean = exact.corrupted_projection(big, torch.arange(len(many)), none, none).mean(0)
    assert torch.allclose(mean, want[0], atol=0.1 * want.abs().max().item())
    exact.eval()
    assert torch.allclose(exact.corrupted_projection(xs, token_nodes, none, none)[token_nodes],
                          want.expand_as(rows_plain), atol=1e-6)  # no dropout in eval mode


@pytest.mark.parametrize("sparse_target,with_bias", [(False, True), (True, True), (True, False)])
def test_sce_loss_linear_equals_sce_of_the_reconstruction(sparse_target, with_bias):
    from mae_graph.gnn import sce_loss, sce_loss_linear

    torch.manual_seed(3)
    m, d, f = 30, 8, 50
    g = torch.randn(m, d, requires_grad=True)
    weight = torch.randn(f, d, requires_grad=True)
    bias = torch.randn(f, requires_grad=True)
    target = torch.rand(m, f) * (torch.rand(m, f) < 0.1)
    target[3] = 0  # an empty row: cos = 0, as F.normalize gives
    with torch.no_grad():
        g[5] = 0  # a reconstruction that is exactly 0 (no kept neighbour, zero bias): finite gradients
        bias[:] = 0
        if with_bias:
            bias[: f // 2] = torch.randn(f // 2)  # a nonzero bias on half the features (row 5 still nonzero)
    b = bias if with_bias else None
    params = [g, weight, bias] if with_bias else [g, weight]
    plain = sce_loss(g @ weight.t() + (bias if with_bias else 0), target, alpha=3.0)
    fused = sce_loss_linear(g, weight, b, target.to_sparse_csr() if sparse_target else target, alpha=3.0)
    assert torch.allclose(plain, fused, atol=1e-6)
    g1 = torch.autograd.grad(plain, params)
    g2 = torch.autograd.grad(fused, params)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(g1, g2))


def test_csr_rows_and_dropout():
    from mae_graph.gnn import csr_rows, dropout

    x = torch.rand(6, 9) * (torch.rand(6, 9) < 0.4)
    rows = torch.tensor([4, 0, 4, 5])
    sub = csr_rows(x.to_sparse_csr(), rows, empty=torch.tensor([2]))
    want = x[rows].clone()
    want[2] = 0
    assert torch.equal(sub.to_dense(), want)
    torch.manual_seed(0)
    y = dropout(torch.ones(200_000), 0.2)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005 and torch.allclose(y[kept], torch.tensor(1.25))
    assert torch.equal(dropout(x, 0.5, training=False), x)


def test_batched_logreg_probe_equals_single_seed_probe():
    from mae_graph.eval import logreg_node_probe, logreg_node_probe_seeds

    data = tiny_sbm()
    x = torch.randn(data.num_nodes, 8) + data.y[:, None].float()
    masks = (data.train_mask, data.val_mask, data.test_mask)
    batched = logreg_node_probe_seeds(x, data.y, *masks, epochs=40, seeds=[0, 3])
    for s, res in zip([0, 3], batched):
        single = logreg_node_probe(x, data.y, *masks, epochs=40, seed=s)
        assert res["acc"] == pytest.approx(single["acc"], abs=1e-6)
        assert res["final_acc"] == pytest.approx(single["final_acc"], abs=1e-6)
        assert res["best_val_acc"] == pytest.approx(single["best_val_acc"], abs=1e-6)
