"""``mae-audio``: mae-core's CLI for the audio domain (pretrain, probe, finetune, reconstruct, info, stats)."""
from __future__ import annotations

import sys

import mae_audio  # noqa: F401  (registers the audio methods, data sets, presets and commands)
from mae_core.cli import run_cli


def main(argv=None) -> int:
    return run_cli("audio", argv, prog="mae-audio",
                   description="mae-audio: Audio-MAE and Bird-MAE on log-mel spectrograms, with prototypical probing")


if __name__ == "__main__":
    sys.exit(main())
