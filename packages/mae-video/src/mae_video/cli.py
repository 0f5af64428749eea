"""``mae-video``: pretrain | probe | finetune | propagate | reconstruct | info."""
from __future__ import annotations

import sys

from mae_core.cli import domain_main

main = domain_main("video", "mae-video",
                   "mae-video: VideoMAE V2 (tube + dual masking), SiamMAE and CropMAE for video")

if __name__ == "__main__":
    sys.exit(main())
