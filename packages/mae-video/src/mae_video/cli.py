"""``mae-video``: pretrain | probe | finetune | propagate | reconstruct | info."""
from __future__ import annotations

import sys

import mae_video  # noqa: F401  (registers the video domain)
from mae_core.cli import run_cli


def main(argv=None) -> int:
    return run_cli("video", argv, prog="mae-video",
                   description="mae-video: VideoMAE V2 (tube + dual masking), SiamMAE and CropMAE for video")


if __name__ == "__main__":
    sys.exit(main())
