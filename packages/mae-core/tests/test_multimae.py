"""MultiMAE: the visible budget and its Dirichlet split, the per-task decoders, each loss term against a hand
computation, any subset of modalities at inference, the multimodal shapes and the folder reader, mIoU."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mae_core
from mae_core.data.multimodal import MultimodalFolder, MultimodalFolderConfig, MultiShapes, MultiShapesConfig
from mae_core.data.shapes import ShapesConfig, SyntheticShapes
from mae_core.data.utils import collate_dicts
from mae_core.errors import DataError, MaeError
from mae_core.eval.grid import iou_scores, mean_iou
from mae_core.masking import token_budget_masking
from mae_core.models.multimae import sample_masked_mean
from mae_core.testing import single_thread

TINY = dict(patch_size=4, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=2,
            decoder_num_heads=2, seg_embed_dim=8)


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def setup():
    ds = MultiShapes(MultiShapesConfig(image_size=16, num_train=6, num_test=2))
    torch.manual_seed(0)
    model = mae_core.create_model("multimae", dataset=ds, **TINY).eval()
    return model, collate_dicts([ds[i] for i in range(4)])


def test_budget_is_fixed_and_split_between_modalities(setup):
    model, batch = setup
    assert model.num_tokens == 16 and model.budget == 8  # 16 px / 4 px patches; half of one modality
    out = model(batch, generator=torch.Generator().manual_seed(1))
    info = out.extra["mask_info"]
    assert info.ids_keep.shape == (4, 8) and (info.mask.sum(1) == 48 - 8).all()
    per = torch.stack([(1 - out.extra["masks"][m]).sum(1) for m in ("rgb", "depth", "seg")], 1)
    assert (per.sum(1) == 8).all()
    assert set(out.metrics) >= {"loss_rgb", "loss_norm_rgb", "loss_depth", "loss_seg", "visible_rgb"}


def test_dirichlet_split_counts():
    """Dirichlet(1, 1, 1): each modality's share has mean 1/3 and P(share > 1/2) = 1/4 (Beta(1, 2)); a large alpha
    gives every modality close to a third."""
    g = torch.Generator().manual_seed(0)
    n, budget = 4000, 96
    info = token_budget_masking([196] * 3, budget, n, 1.0, g)
    counts = torch.stack([(1 - info.mask[:, i * 196:(i + 1) * 196]).sum(1) for i in range(3)], 1)
    assert (counts.sum(1) == budget).all()
    share = counts / budget
    assert torch.allclose(share.mean(0), torch.full((3,), 1 / 3), atol=0.02)
    assert 0.2 < float((share > 0.5).float().mean()) < 0.3
    flat = token_budget_masking([196] * 3, budget, n, 100.0, g)
    share2 = torch.stack([(1 - flat.mask[:, i * 196:(i + 1) * 196]).sum(1) for i in range(3)], 1) / budget
    assert float((share2 > 0.5).float().mean()) < 0.01 and float(share2.std()) < 0.08 < float(share.std())


def test_per_task_decoder_shapes(setup):
    model, batch = setup
    out = model(batch, generator=torch.Generator().manual_seed(0))
    preds = out.extra["preds"]
    assert set(preds) == {"rgb", "norm_rgb", "depth", "seg"}
    assert preds["rgb"].shape == preds["norm_rgb"].shape == (4, 16, 4 * 4 * 3)
    assert preds["depth"].shape == (4, 16, 16)
    assert preds["seg"].shape == (4, 16, 1 * 1 * 9)  # 4 px patches at stride 4: one class pixel per token
    _, preds_rgb, _ = model.run(batch, ["rgb"])  # RGB alone: every decoder still predicts its whole grid
    assert {k: tuple(v.shape) for k, v in preds_rgb.items()} == {k: tuple(v.shape) for k, v in preds.items()}


def test_decoder_queries_and_context(setup):
    """Queries of an input task = projected encoder output (visible) or the mask token, + task + position embedding;
    a task absent from the inputs queries with mask token + position + its task embedding; the context is the
    visible tokens then the global token."""
    model, _ = setup
    dec = model.decoders["depth"]
    latent = torch.randn(2, 1 + 3, 32)
    ids_keep = torch.tensor([[0, 17, 18], [5, 20, 31]])
    mask = torch.ones(2, 32)
    mask.scatter_(1, ids_keep, 0)
    ids_restore = torch.argsort(torch.argsort(mask, dim=1, stable=True), dim=1)
    with torch.no_grad():
        q, ctx = dec.queries_and_context(latent, ids_keep, ids_restore, ["rgb", "depth"])
        proj = dec.proj_context(latent)
        emb = dec.task_embed["depth"][0, 0] + dec.pos_embed[0]
        assert torch.allclose(q[0, 1], proj[0, 2] + emb[1], atol=1e-6)  # token 17 = depth position 1, visible
        assert torch.allclose(q[0, 0], dec.mask_token[0, 0] + emb[0], atol=1e-6)  # depth position 0, hidden
        assert torch.allclose(ctx[1, 0], proj[1, 1] + dec.task_embed["rgb"][0, 0] + dec.pos_embed[0, 5], atol=1e-6)
        assert torch.allclose(ctx[:, -1], proj[:, 0]) and ctx.shape == (2, 4, 16)
        q2, _ = model.decoders["seg"].queries_and_context(latent, ids_keep, ids_restore, ["rgb", "depth"])
        s = model.decoders["seg"]
        assert torch.allclose(q2[1], (s.mask_token + s.pos_embed + s.task_embed["seg"])[0], atol=1e-6)


def test_sample_masked_mean_by_hand():
    per = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert float(sample_masked_mean(per, mask)) == pytest.approx((2.0 + 8.0) / 2)  # the fully visible row is skipped


def test_each_loss_term_by_hand(setup):
    model, batch = setup
    with torch.no_grad():
        out = model(batch, generator=torch.Generator().manual_seed(3))
    preds, masks = out.extra["preds"], out.extra["masks"]
    img = batch["image"]
    d = batch["depth"]
    d = (d - d.mean((1, 2, 3), keepdim=True)) / (d.std((1, 2, 3), keepdim=True) + 1e-6)
    seg4 = batch["seg"][:, ::4, ::4]  # stride 4, nearest: one pixel per 4 x 4 patch, in raster order
    assert torch.equal(model.seg_input(batch), seg4)
    want = {"rgb": [], "norm_rgb": [], "depth": [], "seg": []}
    for b in range(4):
        for t in want:
            rows = []
            for i in range(16):
                if masks[t][b, i] == 0:
                    continue
                r, c = divmod(i, 4)
                if t in ("rgb", "norm_rgb"):
                    patch = img[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].permute(1, 2, 0).reshape(-1)
                    if t == "norm_rgb":
                        patch = (patch - patch.mean()) / (patch.var() + 1e-6).sqrt()
                    rows.append(((preds[t][b, i] - patch) ** 2).mean())
                elif t == "depth":
                    patch = d[b, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4].reshape(-1)
                    rows.append((preds[t][b, i] - patch).abs().mean())
                else:
                    logp = torch.log_softmax(preds[t][b, i], -1)
                    rows.append(-logp[seg4[b, r, c]])
            if rows:
                want[t].append(torch.stack(rows).mean())
    total = 0.0
    for t, v in want.items():
        expect = float(torch.stack(v).mean())
        assert float(out.metrics[f"loss_{t}"]) == pytest.approx(expect, rel=1e-4), t
        total += expect
    assert float(out.loss) == pytest.approx(total, rel=1e-4)


def test_any_subset_of_modalities_at_inference(setup):
    model, batch = setup
    rgb_only = {"image": batch["image"]}
    with torch.no_grad():
        f = model.encode(rgb_only)  # probe_inputs defaults to rgb: no depth or seg needed
        assert f.shape == (4, 32) and torch.isfinite(f).all()
        assert not torch.allclose(model.encode(batch, inputs="rgb-depth"), f)
        tokens, grid = model.token_grid(batch, inputs="rgb-depth")
        assert tokens.shape == (4, 16, 64) and grid == (4, 4)
        assert not torch.allclose(tokens[..., :32], model.token_grid(batch)[0], atol=1e-5)  # joint attention
        maps = model.predict_maps(rgb_only, "rgb")
        assert maps["depth"].shape == (4, 1, 16, 16) and maps["seg"].shape == (4, 4, 4)
    with pytest.raises(MaeError, match="no 'depth'"):
        model.encode(rgb_only, inputs="rgb-depth")
    m2 = mae_core.create_model("multimae", img_size=16, probe_inputs="rgb-depth", **TINY)
    m2.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(m2.eval().encode(batch), model.encode(batch, inputs="rgb-depth"), atol=1e-5)


def test_multishapes_reuses_the_shapes_scenes():
    cfg = MultiShapesConfig(image_size=16, num_train=5, num_test=2, seed=3)
    ds = MultiShapes(cfg)
    plain = SyntheticShapes(ShapesConfig(image_size=16, num_train=5, num_test=2, seed=3))
    assert torch.equal(ds.images, plain.images) and torch.equal(ds.labels, plain.labels)
    for i in range(5):
        s = ds[i]
        fg = s["seg"] > 0
        assert set(s["seg"][fg].unique().tolist()) == {s["label"] + 1}
        assert float(s["depth"][0][fg].mean()) < float(s["depth"][0][~fg].mean())  # the shape is nearer
    assert ds.seg_classes == 9


def _write(root, name, rgb, depth, mask):
    from PIL import Image
    for sub in ("rgb", "depth", "mask"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(root / "rgb" / f"{name}.png")
    np.save(root / "depth" / f"{name}.npy", depth)
    Image.fromarray(mask).save(root / "mask" / f"{name}.png")


def test_multimodal_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        _write(tmp_path, f"s{i}", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8),
               rng.random((20, 20)).astype(np.float32), np.full((20, 20), i % 3, dtype=np.uint8))
    cfg = MultimodalFolderConfig(path=str(tmp_path), image_size=8, val_fraction=0.4)
    train, test = MultimodalFolder(cfg, "train"), MultimodalFolder(cfg, "test")
    assert len(train) == 3 and len(test) == 2 and not set(train.names) & set(test.names)
    s = train[0]
    assert s["image"].shape == (3, 8, 8) and s["depth"].shape == (1, 8, 8) and s["seg"].shape == (8, 8)
    _write(tmp_path, "bad", np.zeros((20, 20, 3), np.uint8), np.zeros((10, 20), np.float32), np.zeros((20, 20), np.uint8))
    with pytest.raises(DataError, match="not aligned") as e:
        MultimodalFolder(cfg, "train")
    assert "\n" not in str(e.value) and "bad.png" in str(e.value)
    (tmp_path / "depth" / "bad.npy").unlink()
    with pytest.raises(DataError, match="no depth file"):
        MultimodalFolder(cfg, "train")


def test_miou_by_hand():
    pred = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]])
    target = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    ious = iou_scores(pred, target, 4)
    assert ious[:3] == [pytest.approx(2 / 4), pytest.approx(2 / 3), pytest.approx(2 / 3)] and ious[3] is None
    assert mean_iou(pred, target, 4) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert math.isclose(mean_iou(target, target, 3), 1.0)
