"""``mae-graph``: the mae-core CLI for the graph domain (GraphMAE, SkeletonMAE)."""
from __future__ import annotations

import sys

from mae_core.cli import domain_main

main = domain_main("graph", "mae-graph",
                   "mae-graph: masked autoencoders for graphs (GraphMAE) and skeletons (SkeletonMAE)")

if __name__ == "__main__":
    sys.exit(main())
