"""``mae-graph``: the mae-core CLI for the graph domain (GraphMAE, SkeletonMAE)."""
from __future__ import annotations

import sys

import mae_graph  # noqa: F401  (registers methods, datasets, presets, probes)
from mae_core.cli import run_cli


def main(argv=None) -> int:
    return run_cli("graph", argv, prog="mae-graph",
                   description="mae-graph: masked autoencoders for graphs (GraphMAE) and skeletons (SkeletonMAE)")


if __name__ == "__main__":
    sys.exit(main())
