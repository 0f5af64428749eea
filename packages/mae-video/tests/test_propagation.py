import torch

from mae_video.data.synthetic import MOVING, MovingShapes
from mae_video.propagation import (RADIUS, RADIUS_ROWS, TEMPERATURE, TOPK, WINDOW, clip_ious, context_frames,
                                   evaluate_propagation, pixel_features, propagate_labels, scaled_radius)
from mae_video.testing import tiny_clips_cfg


def test_reference_protocol_defaults_and_context():
    assert (TOPK, TEMPERATURE, WINDOW, RADIUS, RADIUS_ROWS) == (7, 0.7, 20, 20.0, 30)
    # the first frame plus the 20 previous frames, the clip padded in front with copies of frame 0
    assert context_frames(1, 20) == [0] * 21
    assert context_frames(25, 20) == [0] + list(range(5, 25))
    assert context_frames(3, 2) == [0, 1, 2]
    # 20 cells of a 30-row grid -> 16/3 cells of an 8-row grid; 0 rows: as given; 0 radius: none
    assert abs(scaled_radius(20, 8) - 16 / 3) < 1e-12 and scaled_radius(20, 8, 0) == 20 and scaled_radius(0, 8) is None


def test_one_step_by_hand():
    # 2 frames of a 1 x 3 grid, 1-D features; frame 1's middle cell is compared with frame 0's three cells
    feats = torch.tensor([[[[1.0, 0.0]], [[0.6, 0.8]], [[0.0, 1.0]]]]).reshape(1, 1, 3, 2)
    feats = torch.cat([feats, feats])  # (T=2, h=1, w=3, D=2): frame 1 = frame 0
    mask = torch.tensor([[0, 1, 1]])  # labels per cell (the frame is 1 x 3 pixels)
    soft = propagate_labels(feats, mask, 2, topk=2, window=1, temperature=0.5)
    # cell 1 of frame 1 (0.6, 0.8): context = frame 0 twice (the first frame + the padded copy), 6 keys with
    # cosines 0.6, 1, 0.8 (twice each); top-2 = the two copies of cell 1 (label 1) -> label 1 with weight 1
    assert torch.allclose(soft[1, :, 0, 1], torch.tensor([0.0, 1.0]), atol=1e-6)
    # cell 0 (1, 0): cosines 1, 0.6, 0 -> top-2 = the two copies of cell 0 (label 0)
    assert torch.allclose(soft[1, :, 0, 0], torch.tensor([1.0, 0.0]), atol=1e-6)
    # top-4 at temperature 0.5 for cell 0: two keys of cosine 1 (label 0), two of 0.6 (label 1)
    soft = propagate_labels(feats, mask, 2, topk=4, window=1, temperature=0.5)
    w1, w06 = torch.exp(torch.tensor(1 / 0.5)), torch.exp(torch.tensor(0.6 / 0.5))
    assert torch.allclose(soft[1, 1, 0, 0], w06 / (w1 + w06), atol=1e-6)


def test_radius_restricts_the_previous_frames_only():
    # 1 x 4 grid, one-hot features; frame 1's cell 0 looks like cell 3 of frame 0 (3 cells away), label 1.
    # Context (window 1): the first frame (not restricted) and its padded copy (a previous frame: restricted).
    feats = torch.eye(4).reshape(1, 1, 4, 4).repeat(2, 1, 1, 1)
    feats[1, 0, 0] = torch.eye(4)[3]
    mask = torch.tensor([[0, 0, 0, 1]])
    label1 = lambda radius: propagate_labels(feats, mask, 2, topk=2, window=1, temperature=1.0,  # noqa: E731
                                             radius=radius)[1, 1, 0, 0].item()
    e = torch.e
    # no radius: the two keys of cosine 1 (cell 3 of the first frame and of its copy) -> label 1 with weight 1
    assert abs(label1(None) - 1.0) < 1e-6
    # radius 2: the copy's cell 3 is out of reach (distance 3 >= 2); the first frame's stays -> the top-2 are
    # cosine 1 (label 1) and cosine 0 (label 0): weight e / (e + 1)
    assert abs(label1(2) - e / (e + 1)) < 1e-6
    # the radius is strict: distance 3 < 3 is false, < 3.5 is true
    assert abs(label1(3) - e / (e + 1)) < 1e-6 and abs(label1(3.5) - 1.0) < 1e-6


def test_propagation_of_a_known_translation():
    # a one-hot "feature" per position identifies a patch: a square moving one patch right per frame
    t, h, w = 4, 8, 8
    masks = torch.zeros(t, 32, 32, dtype=torch.uint8)
    feats = torch.zeros(t, h, w, 2)
    feats[..., 1] = 1.0
    for i in range(t):
        masks[i, 8:16, 4 * (i + 1):4 * (i + 3)] = 1
        feats[i, 2:4, i + 1:i + 3] = torch.tensor([1.0, 0.0])
    soft = propagate_labels(feats, masks[0], 2, topk=3, window=2, temperature=0.05)
    assert soft.shape == (t, 2, 32, 32)
    ours, copy = clip_ious(soft, masks)
    assert ours > 0.9 and copy < 0.4


def test_propagation_beats_copying_the_first_mask_on_moving_objects():
    ds = MovingShapes(tiny_clips_cfg(num_train=0, num_test=48, image_size=32, num_frames=8, speed=0.14), "test")
    res = evaluate_propagation(lambda v: pixel_features(v, 2), ds, num_clips=48, moving=MOVING)
    assert res["moving_clips"] >= 10
    assert res["moving_iou"] > res["moving_copy_first_iou"] + 0.1
    assert res["moving_JF"] > res["moving_copy_first_JF"] + 0.1
    for key in ("iou", "J", "F", "JF", "copy_first_JF"):
        assert 0 <= res[key] <= 1
    assert abs(res["JF"] - (res["J"] + res["F"]) / 2) < 1e-12
