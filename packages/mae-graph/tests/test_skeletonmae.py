from pathlib import Path

import numpy as np
import pytest
import torch

from mae_core.errors import DataError
from mae_core.eval import finetune
from mae_core.testing import loss_falls
from mae_core.train import TrainConfig
from mae_graph.data.skeleton import (MSR20, NTU25, SkeletonActionsConfig, SkeletonFilesConfig, make_skeleton_actions,
                                     make_skeleton_files, read_ntu_skeleton)
from mae_graph.methods.skeletonmae import SkeletonMAE, SkeletonMAEConfig

DATA = Path(__file__).parents[3] / ".." / "shared" / "data"


def tiny(**kw):
    base = dict(num_hidden=16, num_layers=2, temporal_dim=32, temporal_depth=1, temporal_heads=2, frames=16)
    base.update(kw)
    return SkeletonMAE(SkeletonMAEConfig(**base))


def test_body_part_masking_masks_whole_parts():
    m = tiny(mask_ratio=0.4, part_prob=1.0, mask_strategy="mixed")
    info, by_part = m.mixed_mask(64, torch.Generator().manual_seed(0))
    n_mask = 25 - int(25 * 0.6)
    assert (info.mask.sum(1) == n_mask).all() and by_part.all()
    parts = [set(p) for p in NTU25.parts.values()]
    for row in info.mask.bool():
        masked = set(row.nonzero().flatten().tolist())
        partial = [p for p in parts if p & masked and not p <= masked]
        assert len(partial) <= 1  # whole parts, the last one cut at random joints
    info2, _ = m.mixed_mask(64, torch.Generator().manual_seed(0))
    assert torch.equal(info.mask, info2.mask)
    rnd = tiny(mask_ratio=0.4, part_prob=0.0, mask_strategy="mixed")
    info_r, by_part_r = rnd.mixed_mask(256, torch.Generator().manual_seed(0))
    assert not by_part_r.any() and (info_r.mask.sum(1) == n_mask).all()
    assert info_r.mask.mean(0).min() > 0.2  # every joint gets masked sometimes


def test_remask_and_loss_on_masked_joints_only():
    ds = make_skeleton_actions(SkeletonActionsConfig(num_train=12, num_test=6, frames=16), "train")
    m = tiny()
    seen = {}

    def hook(mod, args):
        seen["rep"] = args[0].detach()

    m.decoder.register_forward_pre_hook(hook)
    out = m({"skeleton": ds.x[:4]}, generator=torch.Generator().manual_seed(0))
    rep = seen["rep"].reshape(4, 16, 25, -1)
    mask = out.mask.bool()
    assert torch.all(rep[mask[:, None, :].expand(4, 16, 25)] == 0)
    assert out.pred.shape == ds.x[:4].shape


def test_skeletonmae_loss_falls():
    ds = make_skeleton_actions(SkeletonActionsConfig(num_train=16, num_test=6, frames=16), "train")
    first, last = loss_falls(tiny(), {"skeleton": ds.x}, steps=60, lr=3e-3)
    assert last < 0.85 * first  # SCE (beta 2) on whole masked parts: 1.14 -> 0.90 here
    old = tiny(loss_fn="mse", mask_strategy="mixed", embed_dim=0)  # the earlier model: MSE, mixed masks, raw joints
    first, last = loss_falls(old, {"skeleton": ds.x}, steps=60, lr=3e-3)
    assert last < 0.75 * first


def test_generator_classes_separable_after_short_finetune():
    cfg = SkeletonActionsConfig(num_train=180, num_test=60, frames=16)
    train, test = make_skeleton_actions(cfg, "train"), make_skeleton_actions(cfg, "test")
    assert train.num_classes == 6 and train.x.shape == (180, 3, 16, 25)
    torch.manual_seed(0)
    tc = TrainConfig(epochs=40, batch_size=30, lr=3e-3, warmup_epochs=1, progress=False, device="cpu")
    _, summary = finetune(tiny(), train, test, 6, tc, layer_decay=None, label_smoothing=0.0)
    assert summary["test_acc"] > 0.5  # chance 1 / 6; the default generator has style, idle motion and windows


def test_generator_difficulty_knobs():
    from mae_graph.data.skeleton import generate_action

    easy = dict(noise=0.015, style=0.0, nuisance=0.0, window=1.0)

    a = generate_action(1, 24, np.random.default_rng(3), **easy)
    b = generate_action(1, 24, np.random.default_rng(3), **easy)
    assert a.shape == (3, 24, 25) and np.array_equal(a, b)  # deterministic per seed
    # idle motion: a clap clip with nuisance moves the legs, the easy one does not (beyond the joint noise)
    still = generate_action(5, 24, np.random.default_rng(4), noise=0.0, style=0.0, nuisance=0.0, window=1.0)
    idle = generate_action(5, 24, np.random.default_rng(4), noise=0.0, style=0.0, nuisance=1.0, window=1.0)
    knee = NTU25.parts["left_leg"][1]
    assert still[:, :, knee].std(1).max() < 1e-6 < idle[:, :, knee].std(1).max()
    # a short action window leaves rest frames: the waving (right) wrist drops below the neck somewhere in the clip,
    # while with the full window the arm stays raised throughout
    def wrist_below_neck(window):
        seqs = [generate_action(1, 32, np.random.default_rng(i), noise=0.0, window=window, style=0.0, nuisance=0.0)
                for i in range(10)]
        return np.mean([(s[1, :, 10] - s[1, :, 20]).min() < 0 for s in seqs])

    assert wrist_below_neck(1.0) == 0.0 and wrist_below_neck(0.3) == 1.0


def _ntu_body(joints: np.ndarray) -> list[str]:
    lines = ["72057594037931101 0 1 1 1 1 0 0.02 0.05 2", "25"]
    for x, y, z in joints:
        lines.append(f"{x} {y} {z} 270.1 210.3 992.1 530.2 -0.2 0.1 0.9 -0.3 2")
    return lines


def test_ntu_reader_parses_written_file(tmp_path):
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 25, 3)).round(4)
    lines = ["2", "1", *_ntu_body(a), "2", *_ntu_body(b), *_ntu_body(c)]
    f = tmp_path / "S001C001P003R001A007.skeleton"
    f.write_text("\n".join(lines) + "\n")
    arr = read_ntu_skeleton(f)
    assert arr.shape == (3, 2, 25, 2)
    np.testing.assert_allclose(arr[:, 0, :, 0].T, a, atol=1e-5)
    np.testing.assert_allclose(arr[:, 1, :, 1].T, c, atol=1e-5)
    assert np.all(arr[:, 0, :, 1] == 0)  # one body in frame 0
    (tmp_path / "S001C001P004R001A002.skeleton").write_text("\n".join(lines) + "\n")
    train = make_skeleton_files(SkeletonFilesConfig(path=str(tmp_path), frames=4, test_subjects=[4]), "train")
    test = make_skeleton_files(SkeletonFilesConfig(path=str(tmp_path), frames=4, test_subjects=[4]), "test")
    assert len(train) == 1 and train[0]["label"] == 6 and test[0]["label"] == 1
    assert train[0]["skeleton"].shape == (3, 4, 25) and train.layout.name == "ntu25"
    bad = tmp_path / "bad" / "S001C001P001R001A001.skeleton"
    bad.parent.mkdir()
    bad.write_text("3\n1\n")
    with pytest.raises(DataError, match="S001C001P001R001A001.skeleton"):
        read_ntu_skeleton(bad)


def test_numpy_nctvm_reader(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 3, 12, 17, 2)).astype(np.float32)
    x[:, :, 9:] = 0  # padding frames
    np.save(tmp_path / "train_data.npy", x)
    np.save(tmp_path / "train_label.npy", np.arange(10) % 3)
    cfg = SkeletonFilesConfig(path=str(tmp_path / "train_data.npy"), frames=8, test_fraction=0.2)
    tr, te = make_skeleton_files(cfg, "train"), make_skeleton_files(cfg, "test")
    assert (len(tr), len(te)) == (8, 2) and tr.layout.name == "coco17" and tr.x.shape == (8, 3, 8, 17)


@pytest.mark.parametrize("evil_file", ["train_data.npy", "train_label.npy"])
def test_numpy_skeleton_reader_refuses_object_arrays(tmp_path, evil_file):
    """Skeleton arrays and labels are read without pickles: an object array (whose unpickling would run code) is a
    one-line error naming the file; the payload never runs."""
    from mae_core.testing import MarkerPayload

    marker = tmp_path / "ran"
    np.save(tmp_path / "train_data.npy", np.ones((4, 3, 6, 17, 1), np.float32))
    np.save(tmp_path / "train_label.npy", np.arange(4) % 2)
    evil = np.empty(4, dtype=object)
    evil[:] = [MarkerPayload(marker), 1, 2, 3]
    np.save(tmp_path / evil_file, evil)
    cfg = SkeletonFilesConfig(path=str(tmp_path / "train_data.npy"), frames=4, test_fraction=0.25)
    with pytest.raises(DataError, match="object array") as err:
        make_skeleton_files(cfg, "train")
    assert str(tmp_path / evil_file) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_skeleton_label_pickles_are_refused(tmp_path):
    """ST-GCN-style ``train_label.pkl`` files are pickles: refused on one line, never unpickled."""
    import pickle

    from mae_core.testing import MarkerPayload

    marker = tmp_path / "ran"
    np.save(tmp_path / "train_data.npy", np.ones((4, 3, 6, 17, 1), np.float32))
    (tmp_path / "train_label.pkl").write_bytes(pickle.dumps((["a", "b"], [MarkerPayload(marker), 1])))
    cfg = SkeletonFilesConfig(path=str(tmp_path / "train_data.npy"), labels=str(tmp_path / "train_label.pkl"),
                              frames=4)
    with pytest.raises(DataError, match="pickled labels are not read") as err:
        make_skeleton_files(cfg, "train")
    assert str(tmp_path / "train_label.pkl") in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    (tmp_path / "labels.txt").write_text("0\n1\nx\n1\n")  # text labels: a bad line is a one-line error too
    with pytest.raises(DataError, match="labels must be integers"):
        make_skeleton_files(SkeletonFilesConfig(path=str(tmp_path / "train_data.npy"),
                                                labels=str(tmp_path / "labels.txt"), frames=4), "train")


def test_msr_reader_tiny_folder(tmp_path):
    rng = np.random.default_rng(0)
    for a, s in [(1, 1), (2, 2), (1, 3)]:
        frames = rng.normal(size=(5, 20, 4))
        (tmp_path / f"a{a:02d}_s{s:02d}_e01_skeleton3D.txt").write_text(
            "\n".join(" ".join(f"{v:.5f}" for v in row) for row in frames.reshape(-1, 4)))
    tr = make_skeleton_files(SkeletonFilesConfig(path=str(tmp_path), frames=5), "train")
    te = make_skeleton_files(SkeletonFilesConfig(path=str(tmp_path), frames=5), "test")
    assert len(tr) == 2 and len(te) == 1 and tr.layout is MSR20 and te[0]["label"] == 1


@pytest.mark.skipif(not (DATA / "msr_action3d").exists(), reason="shared MSR Action3D copy not present")
def test_real_msr_action3d_cross_subject_split():
    cfg = SkeletonFilesConfig(path=str(DATA / "msr_action3d" / "MSRAction3DSkeletonReal3D.tar.gz"), frames=16)
    tr, te = make_skeleton_files(cfg, "train"), make_skeleton_files(cfg, "test")
    assert len(tr) + len(te) == 565 and tr.num_classes == 20 and tr.layout is MSR20
