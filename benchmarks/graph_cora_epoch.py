"""Per-epoch time of GraphMAE's Cora pretraining step (forward, backward, Adam), for A/B comparisons of code
changes (run by hand; results go to docs/benchmarks/graph.md). Prints the median / 25th percentile / mean of the
per-epoch wall times after 3 warm-up epochs.

    OMP_NUM_THREADS=2 uv run python benchmarks/graph_cora_epoch.py --data ../shared/data/planetoid --epochs 60

To compare with an older tree, export it (`git archive OLD packages/mae-graph/src | tar -x -C runs/old-tree`) and run the
same command with `PYTHONPATH=runs/old-tree/packages/mae-graph/src`; interleave the runs, the VM's speed drifts.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mae_graph import PRESETS
from mae_graph.data.graphs import PlanetoidConfig, collate_graphs, make_planetoid
from mae_graph.methods.graphmae import GraphMAE, GraphMAEConfig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder with the raw Planetoid files (Cora)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--token-dropout", action="store_true")
    a = p.parse_args(argv)
    ds = make_planetoid(PlanetoidConfig(path=a.data, name="cora"), "train")
    _, model_cfg, _, train_cfg, _ = PRESETS["cora"]  # the registered preset: the paper's hyper-parameters
    torch.manual_seed(0)
    model = GraphMAE(GraphMAEConfig(in_dim=ds.num_features, **model_cfg, token_dropout=a.token_dropout))
    opt = torch.optim.Adam(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"],
                           fused=True)
    gen = torch.Generator().manual_seed(0)
    batch = collate_graphs([ds[0]])
    times, loss = [], float("nan")
    for i in range(a.epochs + 3):
        t = time.perf_counter()
        out = model(batch, generator=gen)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        loss = out.loss.item()
        if i >= 3:
            times.append(time.perf_counter() - t)
    times.sort()
    print(f"threads {torch.get_num_threads()}: median {statistics.median(times) * 1e3:.1f} ms / epoch, "
          f"p25 {times[len(times) // 4] * 1e3:.1f}, mean {statistics.mean(times) * 1e3:.1f}; last loss {loss:.4f}")


if __name__ == "__main__":
    main()
