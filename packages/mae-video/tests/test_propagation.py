import torch

from mae_video.data.synthetic import MOVING, MovingShapes
from mae_video.propagation import clip_ious, evaluate_propagation, pixel_features, propagate_labels
from mae_video.testing import tiny_clips_cfg


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
    res = evaluate_propagation(lambda v: pixel_features(v, 2), ds, num_clips=48, topk=5, window=3, radius=4,
                               moving=MOVING)
    assert res["moving_clips"] >= 10
    assert res["moving_iou"] > res["moving_copy_first_iou"] + 0.1
    assert 0 <= res["iou"] <= 1
