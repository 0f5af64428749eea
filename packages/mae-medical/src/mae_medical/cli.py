"""``mae-medical``: the mae-core CLI for the medical domain (BM-MAE, chest X-ray MAE, anomaly MAE)."""
from __future__ import annotations

import sys

from mae_core.cli import run_cli


def main(argv=None) -> int:
    import mae_medical  # noqa: F401  (registers methods, datasets, presets and commands)

    return run_cli("medical", argv, prog="mae-medical",
                   description="mae-medical: masked autoencoders for medical images on MONAI")


if __name__ == "__main__":
    sys.exit(main())
