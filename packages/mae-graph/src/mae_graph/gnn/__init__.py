"""Graph layers shared by the graph methods, as the GraphMAE code builds them (on PyTorch Geometric convolutions
over a plain ``edge_index``), one concern per module:

* :mod:`.gat` -- the GAT layer and stack (heads concatenated, feature + attention dropout, PReLU, optional last
  activation), written for speed on CPU;
* :mod:`.gin` -- the GIN stack (2-layer MLP per layer, norm + activation applied to the node function), also as
  dense layers for fixed small graphs (skeletons);
* :mod:`.sce` -- the scaled cosine error, and its exact narrow-space form for a widening linear decoder;
* :mod:`.sparse` -- CSR products, edge structures, edge softmax and attention aggregation;
* :mod:`.dropout` -- dropout masks from 16-bit random draws;
* :mod:`.common` -- activations and norms.
"""
from .common import make_activation, make_norm
from .dropout import dropout, keep_mask
from .gat import GAT, GATLayer, attention_logits
from .gin import GIN, gin_mlp
from .sce import sce_loss, sce_loss_linear
from .sparse import Aggregation, GraphEdges, csr_rows, edge_aggregate, edge_softmax, sparse_mm

__all__ = ["Aggregation", "GAT", "GATLayer", "GIN", "GraphEdges", "attention_logits", "csr_rows", "dropout",
           "edge_aggregate", "edge_softmax", "gin_mlp", "keep_mask", "make_activation", "make_norm",
           "sce_loss", "sce_loss_linear", "sparse_mm"]
