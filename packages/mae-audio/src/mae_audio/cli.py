"""``mae-audio``: mae-core's CLI for the audio domain (pretrain, probe, finetune, reconstruct, info, stats)."""
from __future__ import annotations

import sys

from mae_core.cli import domain_main

main = domain_main("audio", "mae-audio",
                   "mae-audio: Audio-MAE and Bird-MAE on log-mel spectrograms, with prototypical probing")

if __name__ == "__main__":
    sys.exit(main())
