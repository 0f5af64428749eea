"""Graph inputs that used to fail cryptically or silently: a TU set with no edges (error), TU graphs without edges
(counted warning, loaded), and a GraphMAE mask rate that masks no node (named, instead of a NaN loss)."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from mae_core import ConfigError, DataError, MaeError
from mae_core.config import from_dict
from mae_graph.cli import main
from mae_graph.data.graphs import load_tu
from mae_graph.methods.graphmae import GraphMAE, GraphMAEConfig


def _tu(root, edges: str):
    root.mkdir(parents=True)
    (root / "T_A.txt").write_text(edges)
    (root / "T_graph_indicator.txt").write_text("1\n1\n1\n2\n2\n3\n3\n3\n")
    (root / "T_graph_labels.txt").write_text("1\n2\n1\n")
    return root


def test_tu_without_any_edge_is_one_line_error(tmp_path):
    _tu(tmp_path / "T", "")
    with pytest.raises(DataError) as e:
        load_tu(tmp_path / "T", "T")
    assert "T_A.txt: no edges at all" in str(e.value) and "\n" not in str(e.value)


def test_tu_graphs_without_edges_are_counted_and_loaded(tmp_path, capsys):
    _tu(tmp_path / "T", "1, 2\n2, 1\n")  # only graph 1 has an edge; PyG's slices stop there
    graphs = load_tu(tmp_path / "T", "T", self_loops=False)
    assert [g.num_nodes for g in graphs] == [3, 2, 3]
    assert [g.edge_index.tolist() for g in graphs] == [[[0, 1], [1, 0]], [[], []], [[], []]]
    assert capsys.readouterr().err.strip() == (f"warning: {tmp_path / 'T'}: 2 of 3 T graphs have no edges (isolated "
                                               "nodes only; first: graph 2)")


@pytest.mark.parametrize("rate", [0, 0.0, 1, -0.5])
def test_mask_rate_outside_0_1_names_the_cause(rate):
    with pytest.raises(ConfigError, match="masks (no|every) node, so there is nothing to reconstruct"):
        from_dict(GraphMAEConfig, {"mask_rate": rate}, where="model")


def test_mask_rate_that_masks_no_node_of_a_batch(capsys):
    model = GraphMAE(GraphMAEConfig(in_dim=4, num_hidden=8, num_heads=2, mask_rate=1e-17, encoder="gin",
                                    decoder="gin"))
    g = Data(x=torch.rand(5, 4), edge_index=torch.tensor([[0, 1], [1, 0]]))  # int(5 * (1 - 1e-17)) = 5 kept
    with pytest.raises(MaeError, match="mask_rate=1e-17 masks no node of this 5-node batch"):
        model({"graph": g})
    assert main(["pretrain", "--mask-rate", "0", "--out", "never"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "mask_rate: 0.0 masks no node" in err and "learning rate" not in err
