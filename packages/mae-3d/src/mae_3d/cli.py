"""``mae-3d``: the mae-core CLI for point clouds and LiDAR."""
from __future__ import annotations

import sys

from mae_core.cli import domain_main

main = domain_main("3d", "mae-3d",
                   "mae-3d: masked autoencoders for point clouds (Point-MAE, Point-CMAE) and LiDAR (R-MAE) on Open3D")

if __name__ == "__main__":
    sys.exit(main())
