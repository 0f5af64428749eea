"""I2P-MAE: saliency-weighted sampling without replacement, the depth projection / back-projection of hand-placed
points, and the loss terms against a hand computation."""
import itertools

import pytest
import torch

import mae_3d  # noqa: F401
import mae_core
from mae_core.errors import MaeError
from mae_core.masking import saliency_masking
from mae_3d.methods.i2p_mae import I2PMAE, I2PMAEConfig
from mae_3d.project import ViewFrame, back_project, pixels, project_view, project_views, read_map

TINY = dict(num_groups=8, group_size=16, embed_dim=32, depth=1, num_heads=2, pointnet_dims=[16, 16, 32],
            decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, drop_path=0.0, teacher="random",
            img_size=16, teacher_embed_dim=8, teacher_depth=1, teacher_num_heads=2, augment=False)


def test_saliency_masking_counts_and_no_repeats():
    logits = torch.randn(64, 10)
    info = saliency_masking(logits, 2, torch.Generator().manual_seed(0))
    assert info.ids_keep.shape == (64, 2)
    assert all(len(set(r.tolist())) == 2 for r in info.ids_keep)
    assert torch.equal(info.mask.sum(1), torch.full((64,), 8.0))
    assert torch.equal(info.mask.gather(1, info.ids_keep), torch.zeros(64, 2))


def inclusion(p: torch.Tensor, k: int) -> torch.Tensor:
    """Exact probability that each token is among the first k of sequential draws without replacement."""
    out = torch.zeros(len(p), dtype=torch.float64)
    for seq in itertools.permutations(range(len(p)), k):
        pr, left = 1.0, 1.0
        for i in seq:
            pr *= float(p[i]) / left
            left -= float(p[i])
        for i in seq:
            out[i] += pr
    return out


def test_saliency_masking_matches_multinomial_without_replacement():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0])
    n, k = 20000, 2
    info = saliency_masking(logits.expand(n, -1).contiguous(), k, torch.Generator().manual_seed(1))
    freq = torch.zeros(5).index_add_(0, info.ids_keep.flatten(), torch.ones(n * k)) / n
    exact = inclusion(torch.softmax(logits, 0).double(), k).float()
    assert torch.allclose(freq, exact, atol=0.015)
    draws = torch.multinomial(torch.softmax(logits, 0).expand(n, -1), k, replacement=False,
                              generator=torch.Generator().manual_seed(2))
    mfreq = torch.zeros(5).index_add_(0, draws.flatten(), torch.ones(n * k)) / n
    assert torch.allclose(freq, mfreq, atol=0.02)
    assert bool((freq[:-1] > freq[1:]).all())  # higher saliency, kept more often
    assert torch.isclose(freq.sum(), torch.tensor(float(k)))


def test_projection_of_hand_placed_points():
    # plane extent 1.625 = 13 x 0.125 -> pixel size 0.125 at S = 16; shift 16/2 - floor((14 + 1)/2) - 1 = 0
    pts = torch.tensor([[[0.0, 0.0, 1.0], [1.625, 1.625, -2.0], [0.5, 0.25, 0.5]]])
    img, frame = project_view(pts, 16, radius=0)
    assert torch.allclose(frame.grid, torch.tensor(0.125))
    assert torch.equal(pixels(pts, frame)[0], torch.tensor([[1, 1], [14, 14], [5, 3]]))
    want = torch.full((16, 16), 0.5)
    want[1, 1], want[14, 14], want[5, 3] = torch.sigmoid(torch.tensor([1.0, -2.0, 0.5]))
    assert torch.allclose(img[0, 0], want)
    img3, _ = project_view(pts, 16, radius=1)  # splat: each point on its 3 x 3 pixels, depths summed
    assert torch.isclose(img3[0, 0, 4, 2], torch.sigmoid(torch.tensor(0.5)))
    assert torch.isclose(img3[0, 0, 2, 2], torch.sigmoid(torch.tensor(1.0)))  # the first point's splat (0..2)
    # back-projection reads a full-size map at the point's own pixel
    code = torch.arange(256.0).reshape(1, 1, 16, 16)
    assert torch.equal(read_map(code, pixels(pts, frame), 16)[0, :, 0], torch.tensor([17.0, 238.0, 83.0]))


def test_three_views_permute_the_axes():
    pts = torch.tensor([[[0.0, 0.0, 1.0], [1.625, 1.625, -2.0], [0.5, 0.25, 0.5]]])
    imgs, frames = project_views(pts, 16, radius=0)
    for i, perm in enumerate(((0, 1, 2), (2, 0, 1), (1, 2, 0))):
        ref, _ = project_view(pts[..., list(perm)], 16, radius=0)
        assert torch.equal(imgs[i], ref)
    code = torch.arange(256.0).reshape(1, 1, 1, 16, 16).expand(3, 1, 1, 16, 16)
    got = back_project(pts, code, frames)[..., 0]  # (3, B, N)
    assert torch.equal(got[0, 0], torch.tensor([17.0, 238.0, 83.0]))


def test_loss_terms_by_hand():
    torch.manual_seed(0)
    model = I2PMAE(I2PMAEConfig(**TINY)).eval()
    ds = mae_core.create_dataset("shapes3d", num_points=64, num_classes=2, train_per_class=1)
    batch = {"points": torch.stack([ds[0]["points"], ds[1]["points"]])}
    with torch.no_grad():
        out = model(batch, torch.Generator().manual_seed(3))
    assert torch.equal(out.mask.sum(1), torch.full((2,), float(int(0.8 * 8))))  # int(0.8 G) masked, as the reference
    # the same pieces, recomputed by hand
    nb, ctr = model.group(batch["points"])
    feats, sal, frames = model.views_2d(batch["points"])
    mask, _ = model.guided_mask(sal, frames, ctr, torch.Generator().manual_seed(3))
    assert torch.equal(mask.mask, out.mask)
    with torch.no_grad():
        latent = model.encode_visible(nb, ctr, mask)
        pred, pred_2d = model.decoder(latent, ctr, mask.ids_restore)  # the 2-D head on every token
    l3, l2, n3, n2 = 0.0, 0.0, 0, 0
    m, d = 16, 8
    for b in range(2):
        for g in range(8):
            if out.mask[b, g]:
                p, t = pred[b, g].view(m, 3), nb[b, g]
                dd = ((p[:, None] - t[None]) ** 2).sum(-1)
                l3 += float(dd.min(1).values.mean() + dd.min(0).values.mean())
                n3 += 1
            else:
                for j in range(m):
                    x = nb[b, g, j] + ctr[b, g]
                    for v, perm in enumerate(((0, 1, 2), (2, 0, 1), (1, 2, 0))):
                        f = frames[v]
                        fb = ViewFrame(f.low[b:b + 1], f.grid[b:b + 1], f.shift[b:b + 1], f.size)
                        pix = pixels(x[list(perm)][None, None], fb)
                        tgt = read_map(feats[v, b:b + 1], pix, 16)[0, 0]
                        got = pred_2d[b, g, (j * 3 + v) * d:(j * 3 + v + 1) * d]
                        l2 += float(((got - tgt) ** 2).sum())
                        n2 += d
    assert out.metrics["loss_3d"] == pytest.approx(l3 / n3, rel=1e-4)
    assert out.metrics["loss_2d"] == pytest.approx(l2 / n2, rel=1e-4)
    assert out.loss.item() == pytest.approx(l3 / n3 + l2 / n2, rel=1e-4)


def test_ablations_and_errors():
    cfg = I2PMAEConfig(**{**TINY, "guided": False, "target_2d": False, "teacher": ""})
    model = I2PMAE(cfg)
    assert model.teacher is None and model.decoder.head_2d is None
    ds = mae_core.create_dataset("shapes3d", num_points=64, num_classes=2, train_per_class=1)
    out = model({"points": torch.stack([ds[0]["points"], ds[1]["points"]])}, torch.Generator().manual_seed(0))
    assert "loss_2d" not in out.metrics
    with pytest.raises(MaeError, match="--teacher"):
        I2PMAE(I2PMAEConfig(**{**TINY, "teacher": "/nonexistent/run"}))
