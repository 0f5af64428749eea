import warnings

import numpy as np
import pytest
import torch

from mae_core.errors import DataError
from mae_video.data.folder import VideoFolderConfig, VideoFolderDataset
from mae_video.data.io import probe_video, read_frames, resize_crop, sample_indices, write_video
from mae_video.data.synthetic import CLASSES, MovingShapes
from mae_video.testing import tiny_clips_cfg


def _frames(t=10, s=32, shift=0):
    """A bright square moving right on a dark background; frame i has its square at x = 2 i + shift."""
    f = np.full((t, s, s, 3), 30, dtype=np.uint8)
    for i in range(t):
        x = 2 * i + shift
        f[i, 8:20, x:x + 12] = (220, 200, 40)
    return f


def test_pyav_reads_a_clip_the_test_writes(tmp_path):
    frames = _frames()
    path = write_video(tmp_path / "clip.mp4", frames)
    assert probe_video(path) == 10
    got = read_frames(path, [0, 4, 9])
    assert got.shape == (3, 32, 32, 3) and got.dtype == torch.uint8
    err = (got.float() - torch.from_numpy(frames[[0, 4, 9]]).float()).abs().mean()
    assert err < 12  # lossy codec, but the same picture
    # the square moved: its column centre of mass increases
    cols = [float((g[8:20, :, 0].float().mean(0) > 120).nonzero().float().mean()) for g in got]
    assert cols[0] < cols[1] < cols[2]


def test_sampling_and_resize_crop():
    assert sample_indices(20, 4, 3, start=2) == [2, 5, 8, 11]
    assert sample_indices(5, 4, 3, start=0) == [0, 3, 4, 4]  # short video: clamped to the last frame
    idx = sample_indices(100, 8, 2, generator=torch.Generator().manual_seed(0))
    assert len(idx) == 8 and all(b - a == 2 for a, b in zip(idx, idx[1:]))
    x = resize_crop(torch.from_numpy(_frames(t=2, s=40)), 16, 20)
    assert x.shape == (3, 2, 16, 16) and 0 <= x.min() and x.max() <= 1


def _make_folder(root, with_corrupt=True):
    for c, cls in enumerate(["left", "right"]):
        d = root / cls
        d.mkdir(parents=True)
        for k in range(3):
            write_video(d / f"v{k}.{['mp4', 'avi', 'mkv'][k]}", _frames(shift=c + k))
    frames_dir = root / "right" / "frames0"
    frames_dir.mkdir()
    from PIL import Image
    for i, f in enumerate(_frames(t=6)):
        Image.fromarray(f).save(frames_dir / f"{i:03d}.png")
    write_video(root / "left" / "g.gif", _frames(t=6))
    if with_corrupt:
        (root / "left" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)


def test_folder_dataset_skips_a_corrupt_file_with_a_warning(tmp_path):
    _make_folder(tmp_path)
    cfg = VideoFolderConfig(path=str(tmp_path), num_frames=4, stride=1, image_size=16, short_side=20,
                            test_fraction=0.25)
    with pytest.warns(UserWarning) as caught:  # the file's own warning, then the split's count
        train = VideoFolderDataset(cfg, "train")
    assert any("broken.mp4" in str(w.message) for w in caught), [str(w.message) for w in caught]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        test = VideoFolderDataset(cfg, "test")
    assert len(train.skipped) + len(test.skipped) == 1
    assert len(train) + len(test) == 8  # 3 + 3 videos, a gif and a frame folder; the corrupt one is skipped
    assert train.classes == ["left", "right"] and len(test) >= 2
    s = train[0]
    assert s["video"].shape == (3, 4, 16, 16) and s["label"] in (0, 1)
    assert -1 <= s["video"].min() and s["video"].max() <= 1
    frame_folder = [i for i, (p, _) in enumerate(train.samples + test.samples) if p.is_dir()]
    assert len(frame_folder) == 1


def test_csv_dataset_and_errors(tmp_path):
    _make_folder(tmp_path / "v", with_corrupt=False)
    rows = ["path,label,split", "v/left/v0.mp4,left,train", "v/left/v1.avi,left,train", "v/right/v0.mp4,right,train",
            "v/right/frames0,right,test", "v/left/g.gif,left,test"]
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    cfg = VideoFolderConfig(path=str(tmp_path / "clips.csv"), num_frames=3, stride=2, image_size=16, short_side=16)
    train, test = VideoFolderDataset(cfg, "train"), VideoFolderDataset(cfg, "test")
    assert (len(train), len(test)) == (3, 2)
    assert test[0]["video"].shape == (3, 3, 16, 16)
    with pytest.raises(DataError, match="no such file"):
        VideoFolderDataset(VideoFolderConfig(path=str(tmp_path / "nope")), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no videos found"):
        VideoFolderDataset(VideoFolderConfig(path=str(tmp_path / "empty")), "train")


def test_synthetic_clips_are_deterministic_and_labelled():
    a = MovingShapes(tiny_clips_cfg(num_train=64), "train")
    b = MovingShapes(tiny_clips_cfg(num_train=64), "train")
    assert torch.equal(a.clips, b.clips) and torch.equal(a.labels, b.labels)
    assert len(set(a.labels.tolist())) == len(CLASSES)
    s = a[0]
    assert s["video"].shape == (3, 8, 16, 16) and s["masks"].shape == (8, 16, 16)
    assert s["masks"].sum() > 0
    # a "right" clip: the object's centre moves right
    i = int((a.labels == 0).nonzero()[0])
    m = a.masks[i].float()
    xs = [(m[t].sum(0) * torch.arange(16.0)).sum() / m[t].sum() for t in (0, 7)]
    assert xs[1] > xs[0] + 2


def test_single_frame_video_is_skipped_and_short_clips_counted(tmp_path):
    """A 1-frame MP4 is a still image: skipped with a warning naming it; clips shorter than a sample's span are
    counted in one warning; a split left with no video is a one-line error."""
    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        (tmp_path / "test" / c).mkdir(parents=True)
        write_video(tmp_path / "train" / c / "long.mp4", _frames(t=16))
        write_video(tmp_path / "train" / c / "short.mp4", _frames(t=5))
        write_video(tmp_path / "test" / c / "long.mp4", _frames(t=16))
    still = tmp_path / "train" / "a" / "still.mp4"
    write_video(still, _frames(t=1))
    assert probe_video(still) == 1
    cfg = VideoFolderConfig(path=str(tmp_path), num_frames=4, stride=2, image_size=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VideoFolderDataset(cfg, "train")
    msgs = [str(w.message) for w in caught]
    assert any("still.mp4: a single frame (a still image, not a video)" in m for m in msgs), msgs
    assert any("2 of 4 train clips have fewer frames than a sample spans (7 = 4 frames x stride 2; shortest 5)" in m
               for m in msgs), msgs
    assert len(ds) == 4 and ds.skipped == [str(still)]
    assert ds[0]["video"].shape == (3, 4, 16, 16)
    only = tmp_path / "only"
    (only / "a").mkdir(parents=True)
    write_video(only / "a" / "still.mp4", _frames(t=1))
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no readable video of two or more frames"):
        VideoFolderDataset(VideoFolderConfig(path=str(only), test_fraction=0.0), "train")
