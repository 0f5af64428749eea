"""Chest X-ray MAE recipe and MemMC-MAE anomaly detection on tiny 2-D data."""
from pathlib import Path

import numpy as np
import pytest
import torch

from mae_core.testing import loss_falls
from mae_medical.data.xray import (ChestAnomaly, ChestAnomalyConfig, MedicalImages, MedicalImagesConfig,
                                   SyntheticChest, SyntheticChestConfig)
from mae_medical.methods.anomaly_mae import AnomalyMAE, AnomalyMAEConfig
from mae_medical.methods.xray_mae import RECIPE, XRayMAE, XRayMAEConfig, finetune_xray, monai_mean_auc

BREAST = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "breastmnist" / "breastmnist.npz"
TINY2D = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
              decoder_num_heads=2)


def test_xray_recipe_defaults_and_mask_ratio():
    cfg = XRayMAEConfig(**TINY2D)
    assert cfg.mask_ratio == 0.9 and cfg.in_chans == 1 and RECIPE["layer_decay"] == 0.55
    assert RECIPE["drop_path"] == 0.2 and RECIPE["randaugment"] == "rand-m6-mstd0.5-inc1"
    m = XRayMAE(cfg)
    out = m({"image": torch.randn(3, 1, 16, 16)}, generator=torch.Generator().manual_seed(0))
    assert torch.all((1 - out.mask).sum(1) == int(16 * 0.1))  # 16 tokens, 90 % masked
    assert m.feature_dim() == 32  # global average pooling


def test_augmentations_follow_the_recipe():
    from torchvision.transforms import v2

    from mae_medical.data.randaugment import RandAugment
    ds = SyntheticChest(SyntheticChestConfig(image_size=16, num_train=4, num_test=2, augment="finetune"))
    kinds = [type(t) for t in ds.aug.transforms]
    assert kinds == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, RandAugment]
    assert ds.aug.transforms[0].scale == (0.08, 1.0) and ds.aug.transforms[2].magnitude == 6
    assert SyntheticChest(SyntheticChestConfig(image_size=16, num_train=4, num_test=2), "test").aug is None
    assert ds.multilabel and ds[0]["label"].shape == (3,)


def test_xray_finetune_multilabel_and_monai_auc():
    torch.manual_seed(0)
    cfg = SyntheticChestConfig(image_size=16, num_train=32, num_test=16, augment="finetune")
    train, test = SyntheticChest(cfg, "train"), SyntheticChest(cfg, "test")
    from mae_core.train import TrainConfig
    clf, s = finetune_xray(XRayMAE(XRayMAEConfig(**TINY2D)), train, test, 3,
                           TrainConfig(epochs=1, batch_size=16, lr=1e-3, progress=False, device="cpu"))
    assert 0.0 <= s["test_auc_monai"] <= 1.0 and clf.multilabel
    # MONAI's macro AUC agrees with mae-core's rank AUC
    from mae_core.eval import mean_auc
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(50, 3, generator=g) > 0.5).long()
    sc = torch.rand(50, 3, generator=g) + 0.5 * y
    assert abs(monai_mean_auc(sc, y) - mean_auc(sc, y)) < 1e-6


def test_medmnist_npz_and_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", train_images=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8),
             train_labels=rng.integers(0, 2, (10, 1)), test_images=rng.integers(0, 255, (4, 28, 28), dtype=np.uint8),
             test_labels=rng.integers(0, 2, (4, 1)))
    ds = MedicalImages(MedicalImagesConfig(path=str(tmp_path / "m.npz")), "test")
    assert len(ds) == 4 and ds[0]["image"].shape == (1, 28, 28) and not ds.multilabel
    from PIL import Image
    (tmp_path / "imgs").mkdir()
    rows = ["file,a,b"]
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(tmp_path / "imgs" / f"x{i}.png")
        rows.append(f"x{i}.png,{i % 2},{(i // 2) % 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    cfg = MedicalImagesConfig(path=str(tmp_path / "imgs"), labels_csv=str(tmp_path / "labels.csv"), image_size=16,
                              test_fraction=0.3)
    tr, te = MedicalImages(cfg, "train"), MedicalImages(cfg, "test")
    assert len(tr) + len(te) == 12 and tr.multilabel and tr[0]["image"].shape == (1, 16, 16)
    from mae_core.errors import DataError
    with pytest.raises(DataError, match="npz"):
        (tmp_path / "bad.npz").write_bytes(b"garbage")
        MedicalImages(MedicalImagesConfig(path=str(tmp_path / "bad.npz")), "train")


@pytest.mark.parametrize("member", ["train_images", "train_labels"])
def test_medmnist_npz_refuses_object_arrays(tmp_path, member):
    """MedMNIST .npz files are read with allow_pickle=False: an object array (its unpickling would run code) is a
    one-line error naming the file, and the payload never runs."""
    from mae_core.errors import DataError
    from mae_core.testing import MarkerPayload

    marker = tmp_path / "ran"
    arrays = dict(train_images=np.zeros((3, 28, 28), np.uint8), train_labels=np.zeros((3, 1), np.int64))
    evil = np.empty(3, dtype=object)
    evil[:] = [MarkerPayload(marker), 0, 1]
    arrays[member] = evil
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(DataError, match="object array") as err:
        MedicalImages(MedicalImagesConfig(path=str(tmp_path / "evil.npz")), "train")
    assert str(tmp_path / "evil.npz") in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.skipif(not BREAST.exists(), reason=f"real BreastMNIST not found at {BREAST}")
def test_breastmnist_real_file():
    ds = MedicalImages(MedicalImagesConfig(path=str(BREAST), augment="none"), "test")
    assert len(ds) == 156 and ds.num_classes == 2 and int(ds.labels.sum()) == 114


def test_anomaly_mae_memory_levels_and_maps():
    torch.manual_seed(0)
    cfg = AnomalyMAEConfig(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2, memory_slots=4, levels=2,
                           decoder_embed_dim=32, decoder_num_heads=2)
    m = AnomalyMAE(cfg)
    ds = ChestAnomaly(ChestAnomalyConfig(image_size=16, num_train=8, num_test=8), "test")
    batch = {"image": ds.images[:4]}
    out = m(batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    # the memory slots are attended to (they get gradient) and the decoder has one cross block per level
    assert m.encoder.blocks[0].memory_k.grad.abs().sum() > 0 and m.encoder.blocks[0].memory_v.grad.abs().sum() > 0
    assert len(m.decoder_blocks) == 2
    # the decoder depends on an intermediate encoder level, not only the last one
    with torch.no_grad():
        p1, _ = m.forward_masked(batch, torch.Generator().manual_seed(1))
        m.decoder_level_norms[1].bias.add_(1.0)
        p2, _ = m.forward_masked(batch, torch.Generator().manual_seed(1))
    assert not torch.allclose(p1, p2)
    scores, maps = m.anomaly(ds.images, num_masks=6, generator=torch.Generator().manual_seed(0))
    assert scores.shape == (8,) and maps.shape == (8, 16, 16) and torch.all(maps >= 0)
    assert ds.labels.tolist() == [0, 1] * 4 and ds.lesions[1].any() and not ds.lesions[0].any()
    assert all(int(ChestAnomaly(ChestAnomalyConfig(image_size=16, num_train=8, num_test=2))[i]["label"]) == 0
               for i in range(8))


def test_anomaly_loss_falls():
    torch.manual_seed(0)
    m = AnomalyMAE(AnomalyMAEConfig(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, memory_slots=4,
                                    levels=2, decoder_embed_dim=32, decoder_num_heads=2))
    ds = ChestAnomaly(ChestAnomalyConfig(image_size=16, num_train=8, num_test=2))
    first, last = loss_falls(m, {"image": ds.images}, steps=30, lr=2e-3)
    assert last < 0.8 * first


def test_cli_anomaly_and_xray(tmp_path, capsys):
    from mae_medical.cli import main
    run = tmp_path / "an"
    small = ["--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--decoder-embed-dim", "32",
             "--decoder-num-heads", "2", "--image-size", "16", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    assert main(["pretrain", "--method", "anomaly-mae", *small, "--memory-slots", "4", "--levels", "2",
                 "--num-train", "32", "--num-test", "8", "--out", str(run)]) == 0
    assert main(["anomaly", "--run", str(run), "--num-masks", "2"]) == 0
    assert (run / "pictures" / "anomaly.png").exists()
    assert main(["pretrain", "--method", "xray-mae", *small, "--num-train", "32", "--num-test", "8",
                 "--out", str(tmp_path / "xr")]) == 0
    assert main(["anomaly", "--run", str(tmp_path / "xr")]) == 2
