from .graphs import (GraphDataset, NodeGraphDataset, PlanetoidConfig, SBMConfig, SyntheticGraphsConfig, TUConfig,
                     collate_graphs, load_planetoid, load_tu, make_planetoid, make_sbm, make_synthetic_graphs,
                     make_tu)

__all__ = ["GraphDataset", "NodeGraphDataset", "PlanetoidConfig", "SBMConfig", "SyntheticGraphsConfig", "TUConfig",
           "collate_graphs", "load_planetoid", "load_tu", "make_planetoid", "make_sbm", "make_synthetic_graphs",
           "make_tu"]
