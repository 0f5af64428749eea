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


def test_embedded_picture_masks_hide_about_half_of_the_object(tmp_path, monkeypatch):
    # with tube masking an object whose tubes are all hidden can only be guessed as background, and one that is all
    # visible shows no reconstruction: on clips with object masks each clip's masking seed hides about half of it
    import mae_video.viz as viz
    from mae_video.data.synthetic import MovingShapes, MovingShapesConfig

    torch.manual_seed(0)
    ds = MovingShapes(MovingShapesConfig(num_frames=4, image_size=16, num_train=4, num_test=2))
    m = VideoMAE(tiny_videomae_cfg(num_frames=4, mask_ratio=0.75))
    videos = torch.stack([ds[i]["video"] for i in range(4)])
    objects = torch.stack([ds[i]["masks"] for i in range(4)])
    seeds = viz.object_mask_seeds(m, videos, objects)
    panels = viz.reconstruction_panels(m, videos, ds.mean, ds.std, seeds=seeds)
    assert panels[1].shape == (4, 4, 16, 16, 3)
    for v, obj, s in zip(videos, objects, seeds):
        hid = m.reconstruct_video(v[None], generator=torch.Generator().manual_seed(s))[0][0]
        frac = ((hid * obj).sum() / obj.sum()).item()
        assert 0.25 <= frac <= 0.75, (s, frac)
    seen = {}
    monkeypatch.setattr(viz, "save_video_reconstruction", lambda *a, **k: seen.update(k))
    viz.visualize_video(m, ds, tmp_path / "v.png")
    assert seen["objects"].shape == (4, 4, 16, 16)
    path = save_video_reconstruction(m, videos[:1], tmp_path / "o.png", objects=objects[:1], gif=False)
    assert path.exists()
