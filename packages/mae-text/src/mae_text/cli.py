"""``mae-text``: mae-core's CLI for the text domain (pretrain, probe, info, ...) plus finetune / evaluate / encode."""
from __future__ import annotations

import sys

import mae_text  # noqa: F401  (registers methods, datasets and commands)
from mae_core.cli import run_cli


def main(argv=None) -> int:
    return run_cli("text", argv, prog="mae-text",
                   description="mae-text: RetroMAE, DupMAE and Starbucks pretraining for dense retrieval")


if __name__ == "__main__":
    sys.exit(main())
