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


def test_norm_pix_picture_adds_the_prediction_alone(tmp_path):
    # a norm-pix model's reconstruction uses the true patch statistics: a fourth row shows the prediction alone,
    # stretched to [0, 1] per clip; without norm-pix there are three rows
    from mae_video.viz import reconstruction_panels
    torch.manual_seed(0)
    m = VideoMAE(tiny_videomae_cfg())
    v = torch.randn(2, 3, 8, 16, 16)
    panels = reconstruction_panels(m, v, (0.5,) * 3, (0.5,) * 3)
    assert len(panels) == 4 and panels[3].shape == (2, 8, 16, 16, 3)
    for clip in panels[3]:
        assert clip.min().item() == 0.0 and abs(clip.max().item() - 1.0) < 1e-6
    m.norm_pix_loss = False
    assert len(reconstruction_panels(m, v, (0.5,) * 3, (0.5,) * 3)) == 3
    four = np.asarray(Image.open(save_video_reconstruction(VideoMAE(tiny_videomae_cfg()), v[:1], tmp_path / "a.png")))
    three = np.asarray(Image.open(save_video_reconstruction(m, v[:1], tmp_path / "b.png")))
    assert four.shape[0] > 1.2 * three.shape[0]
    assert Image.open(tmp_path / "a.gif").size[0] > 1.2 * Image.open(tmp_path / "b.gif").size[0]
