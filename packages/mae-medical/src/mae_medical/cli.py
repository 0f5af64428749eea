"""``mae-medical``: the mae-core CLI for the medical domain (BM-MAE, chest X-ray MAE, anomaly MAE)."""
from __future__ import annotations

import sys

from mae_core.cli import domain_main

main = domain_main("medical", "mae-medical",
                   "mae-medical: masked autoencoders for medical images on MONAI")

if __name__ == "__main__":
    sys.exit(main())
