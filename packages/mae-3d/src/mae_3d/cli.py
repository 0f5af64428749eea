"""``mae-3d``: the mae-core CLI for point clouds and LiDAR."""
from __future__ import annotations

import sys

import mae_3d  # noqa: F401  (registers methods, datasets, presets, probes and commands)
from mae_core.cli import run_cli


def main(argv=None) -> int:
    return run_cli("3d", argv, prog="mae-3d")


if __name__ == "__main__":
    sys.exit(main())
