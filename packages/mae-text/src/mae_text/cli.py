"""``mae-text``: mae-core's CLI for the text domain (pretrain, probe, info, ...) plus finetune / evaluate / encode."""
from __future__ import annotations

import sys

from mae_core.cli import domain_main

main = domain_main("text", "mae-text",
                   "mae-text: RetroMAE, DupMAE and Starbucks pretraining for dense retrieval")

if __name__ == "__main__":
    sys.exit(main())
