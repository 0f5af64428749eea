import numpy as np
import torch
from PIL import Image

from mae_video.methods.videomae import VideoMAE
from mae_video.testing import tiny_videomae_cfg
from mae_video.viz import save_video_reconstruction


def test_reconstruction_picture_has_no_empty_band(tmp_path):
    # constrained layout: the title sits on the first row of frames; the default layout left a band of 46 white
    # pixel rows between them for two 8-frame clips
    torch.manual_seed(0)
    path = save_video_reconstruction(VideoMAE(tiny_videomae_cfg()), torch.randn(2, 3, 8, 16, 16), tmp_path / "r.png",
                                     gif=False)
    white = (np.asarray(Image.open(path).convert("L")) > 250).all(1)
    longest = run = 0
    for w in white:
        run = run + 1 if w else 0
        longest = max(longest, run)
    assert longest < 20, longest
