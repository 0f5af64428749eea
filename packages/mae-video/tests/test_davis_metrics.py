import math

import torch

from mae_video.davis_metrics import boundary_pixels, disk, f_measure, jaccard, seg2bmap, sequence_jf


def _mask(h, w, boxes):
    m = torch.zeros(h, w, dtype=torch.bool)
    for r0, r1, c0, c1 in boxes:
        m[r0:r1, c0:c1] = True
    return m


def test_jaccard_by_hand():
    a = _mask(6, 6, [(1, 3, 1, 4)])  # 2 x 3 = 6 pixels
    b = _mask(6, 6, [(2, 4, 1, 4)])  # 6 pixels, 3 shared
    assert jaccard(a, b) == 3 / 9
    assert jaccard(torch.zeros(4, 4), torch.zeros(4, 4)) == 1.0  # both empty
    assert jaccard(a, torch.zeros(6, 6)) == 0.0


def test_seg2bmap_of_a_square_by_hand():
    seg = _mask(5, 5, [(1, 3, 1, 3)])  # rows 1-2, cols 1-2
    expected = torch.tensor([[1, 1, 1, 0, 0],   # differ from the lower-right / lower neighbour
                             [1, 0, 1, 0, 0],   # (1,1) equals its right, lower and lower-right neighbours
                             [1, 1, 1, 0, 0],
                             [0, 0, 0, 0, 0],
                             [0, 0, 0, 0, 0]], dtype=torch.bool)
    # DAVIS offsets the boundary half a pixel towards the origin: (0,0) differs from its lower-right (1,1)
    assert torch.equal(seg2bmap(seg), expected)
    # the last row / column compare along the edge only, and the corner is never a boundary
    full = torch.ones(3, 3, dtype=torch.bool)
    assert not seg2bmap(full).any()


def test_disk_and_matching_distance():
    assert torch.equal(disk(1), torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool))
    assert int(disk(2).sum()) == 13
    assert boundary_pixels((32, 32)) == 1  # ceil(0.008 * 45.25)
    assert boundary_pixels((480, 854)) == math.ceil(0.008 * math.hypot(480, 854)) == 8
    assert boundary_pixels((10, 10), 2) == 2


def test_f_measure_by_hand():
    true = _mask(12, 12, [(2, 6, 2, 6)])
    assert f_measure(true, true) == 1.0
    # shifted by one column: within the one-pixel matching distance (disk(1) at 12 x 12), every boundary pixel
    # of each map has a neighbour of the other within the 4-neighbourhood -> F = 1
    shifted = _mask(12, 12, [(2, 6, 3, 7)])
    assert f_measure(shifted, true) == 1.0
    # shifted by three columns. Boundary rings (origin-offset): true rows 1-5 x cols 1-5, predicted rows 1-5 x
    # cols 4-8, 16 pixels each. A predicted pixel is matched when a true one lies in its 4-neighbourhood (disk(1)):
    # rows 1 and 5 at cols 4, 5, 6 (6 pixels) and col 4 at rows 2-4 (next to true col 5; 3 pixels) -> 9 of 16;
    # by symmetry 9 of the 16 true pixels are matched.
    far = _mask(12, 12, [(2, 6, 5, 9)])
    fg, gt = seg2bmap(far), seg2bmap(true)
    assert int(fg.sum()) == 16 and int(gt.sum()) == 16
    p = r = 9 / 16
    assert abs(f_measure(far, true) - 2 * p * r / (p + r)) < 1e-12
    # empty prediction: precision 1, recall 0 -> 0; both empty -> 1
    empty = torch.zeros(12, 12, dtype=torch.bool)
    assert f_measure(empty, true) == 0.0 and f_measure(true, empty) == 0.0 and f_measure(empty, empty) == 1.0


def test_sequence_scores_skip_the_first_and_last_frame():
    true = torch.stack([_mask(8, 8, [(2, 4, 2, 4)])] * 4)
    pred = true.clone()
    pred[0] = False  # the given frame is not scored
    pred[3] = False  # nor the last one
    pred[2] = _mask(8, 8, [(2, 4, 2, 3)])  # half the object: J 0.5
    j, f = sequence_jf(pred, true)
    assert j == (1.0 + 0.5) / 2
    # its boundary lies within the one-pixel matching distance of the true one: F = 1 on both scored frames
    # (the empty first and last frames would give F = 0)
    assert f == 1.0
