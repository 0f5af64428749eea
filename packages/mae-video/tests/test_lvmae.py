"""LV-MAE: the key-padding mask, importance masking, the masked count and the loss support (tiny sizes)."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from mae_core.masking import padded_masking, predecessor_similarity
from mae_video.data.stories import SCRIPTS, LongVideoConfig, LongVideoStories, make_stories
from mae_video.data.synthetic import generate_clips
from mae_video.methods.lvmae import LVMAE, LVMAEConfig, mean_segments


def tiny(**over) -> LVMAE:
    torch.manual_seed(0)
    cfg = dict(segment_dim=8, embed_dim=16, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=2,
               decoder_num_heads=2, max_segments=32)
    return LVMAE(LVMAEConfig(**{**cfg, **over})).eval()


def padded(videos: list[torch.Tensor], total: int, fill: float = 0.0) -> dict:
    seg = torch.full((len(videos), total, videos[0].shape[1]), fill)
    for i, v in enumerate(videos):
        seg[i, :len(v)] = v
    return {"segments": seg, "length": torch.tensor([len(v) for v in videos])}


def test_padding_changes_nothing_for_the_real_segments():
    model = tiny(masking="importance", crop=False)  # deterministic masks: same visible set padded or not
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 8, generator=g), torch.randn(9, 8, generator=g)
    alone = padded([a], 5)
    mixed = padded([a, b], 9)
    wide = padded([a, b], 20, fill=7.0)  # garbage in the padding
    with torch.no_grad():
        f_alone = model.forward_features(alone)[0, :6]
        for batch in (mixed, wide):
            assert torch.allclose(model.forward_features(batch)[0, :6], f_alone, atol=1e-5)
            assert torch.allclose(model.encode(batch)[0], model.encode(alone)[0], atol=1e-5)
        o_alone = model(alone)
        o_wide = model(wide)
        o_b = model(padded([b], 9))
    assert torch.allclose(o_wide.pred[0, :5], o_alone.pred[0], atol=1e-5)
    assert torch.allclose(o_wide.pred[1, :9], o_b.pred[0], atol=1e-5)
    assert o_wide.mask[:, 9:].sum() == 0 and o_wide.mask[0, 5:].sum() == 0
    # the batch loss is the mean over both videos' masked segments
    n_a, n_b = o_alone.mask.sum(), o_b.mask.sum()
    assert torch.allclose(o_wide.loss, (o_alone.loss * n_a + o_b.loss * n_b) / (n_a + n_b), atol=1e-5)


def test_importance_masking_keeps_the_segments_least_like_their_predecessor():
    s = 1 / math.sqrt(2)
    x = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [s, s], [-1, 0]], dtype=torch.float)[None]
    scores = predecessor_similarity(x)  # 0 (first), 1, 0, 1, 0.707, -0.707
    assert torch.allclose(scores, torch.tensor([[0, 1, 0, 1, s, -s]]), atol=1e-6)
    info = padded_masking(scores, torch.tensor([6]), 0.5)
    assert info.ids_keep.tolist() == [[5, 0, 2]]  # lowest similarity first, ties by position
    assert info.mask.tolist() == [[0, 1, 0, 1, 1, 0]]
    model = tiny(segment_dim=2, masking="importance", crop=False)
    out = model({"segments": torch.cat([x, torch.zeros(1, 3, 2)], 1), "length": torch.tensor([6])})
    assert out.mask.tolist() == [[0, 1, 0, 1, 1, 0, 0, 0, 0]]


def test_half_of_the_real_segments_are_masked_and_padding_never_is():
    lengths = torch.tensor([20, 33, 60, 7])
    model = tiny(max_segments=64, crop=False).train()
    batch = padded([torch.randn(int(n), 8) for n in lengths], 60)
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert out.mask.sum(1).tolist() == [n - n // 2 for n in lengths.tolist()]
    real = torch.arange(60)[None] < lengths[:, None]
    assert out.mask[~real].sum() == 0
    kept = out.extra["kept_real"]
    assert kept.sum(1).tolist() == [n // 2 for n in lengths.tolist()]
    kept_ids = [set(out.extra["ids_keep"][i][kept[i]].tolist()) for i in range(4)]
    for i in range(4):  # the visible real segments are exactly the unmasked real ones
        assert kept_ids[i] == set(torch.nonzero(real[i] & (out.mask[i] == 0)).flatten().tolist())
    # every other entry of the dense visible set is padding, never a masked real segment
    assert all(int(j) >= n for i, n in enumerate(lengths.tolist()) for j in out.extra["ids_keep"][i][~kept[i]])


def test_loss_only_on_masked_real_segments():
    for loss in ("mse", "cosine"):
        model = tiny(crop=False, loss=loss).train()
        batch = padded([torch.randn(11, 8), torch.randn(6, 8)], 11)
        out = model(batch, generator=torch.Generator().manual_seed(1))
        out.pred.retain_grad()
        out.loss.backward()
        grad_rows = out.pred.grad.abs().sum(-1) > 0
        assert torch.equal(grad_rows, out.mask > 0)  # gradient exactly at the masked real segments
        target = F.normalize(batch["segments"], dim=-1)
        per = ((out.pred - target) ** 2).mean(-1) if loss == "mse" else \
            1 - F.cosine_similarity(out.pred, target, dim=-1, eps=1e-6)
        assert torch.allclose(out.loss, (per * out.mask).sum() / out.mask.sum(), atol=1e-6)


def test_random_window_and_mean_baseline():
    model = tiny(max_segments=32).train()
    x = torch.arange(1, 13, dtype=torch.float)[None, :, None].expand(2, 12, 8).clone()
    win, size = model.random_window(x, torch.tensor([12, 5]), torch.Generator().manual_seed(0))
    for i, n in enumerate((12, 5)):
        assert 2 <= int(size[i]) <= n
        vals = win[i, :size[i], 0]
        assert torch.equal(vals, vals[0] + torch.arange(int(size[i])))  # a contiguous window at the front
        assert win[i, size[i]:].abs().sum() == 0
    batch = padded([torch.ones(3, 8), -torch.ones(2, 8)], 4, fill=5.0)
    assert torch.allclose(mean_segments(batch), torch.stack([torch.ones(8), -torch.ones(8)]) / math.sqrt(8))


def test_stories_share_motions_across_orders_and_one_scene():
    labels, motions = make_stories(40, 20, 60, seed=0)
    for lab, seq in zip(labels.tolist(), motions):
        assert 20 <= len(seq) <= 60
        runs = [(m, len(list(g))) for m, g in itertools.groupby(seq.tolist())]
        assert [m for m, _ in runs] == list(SCRIPTS[lab])  # four acts in the script's order
        assert min(k for _, k in runs) >= 2
    assert sorted(SCRIPTS[0]) == sorted(SCRIPTS[1]) and SCRIPTS[0] != SCRIPTS[1]
    # one scene per story: the first frames of two clips of a scene differ only where the object is
    clips, masks, got = generate_clips(3, 4, 16, seed=0, labels=torch.tensor([4, 4, 4]),
                                       scenes=torch.tensor([0, 0, 1]))
    assert got.tolist() == [4, 4, 4]
    bg = (masks[0, 0] == 0) & (masks[1, 0] == 0) & (masks[2, 0] == 0)
    same = (clips[0, :, 0].float() - clips[1, :, 0].float()).abs().mean(0)[bg].mean()
    other = (clips[0, :, 0].float() - clips[2, :, 0].float()).abs().mean(0)[bg].mean()
    assert same < 30 < other  # pixel noise only (0.02 x 255 per channel, about 6 here) vs another background
    ds = LongVideoStories(LongVideoConfig(teacher="random", segment_pool="mean", num_frames=4, image_size=16,
                                          num_train=3, min_segments=8, max_segments=10))
    batch = ds.collate_fn([ds[i] for i in range(3)])
    assert batch["segments"].shape == (3, int(batch["length"].max()), ds.dim)
    assert batch["length"].tolist() == [len(m) for m in ds.motions]


def test_default_segment_encoder_is_trained_with_the_papers_videomae(monkeypatch):
    # the no-argument videomae run has its own mask / target on the embedded clips; LV-MAE's cached segment encoder
    # keeps the paper's (mask 0.9, normalised targets, 2 x 8 x 8 tubelets, base lr 4e-3), the recipe it had (the
    # cache key now also names patch_size and base_lr)
    import pytest

    import mae_video.data.stories as stories

    seen = {}

    def fake(method, data_cfg, options, prefix, what):
        seen.update(method=method, options=options)
        raise RuntimeError("stop")

    monkeypatch.setattr(stories, "cached_pretrain", fake)
    with pytest.raises(RuntimeError, match="stop"):
        stories.segment_encoder(LongVideoConfig(teacher="", teacher_epochs=3))
    assert seen == {"method": "videomae", "options": {"base_lr": 4e-3, "epochs": 3, "mask_ratio": 0.9,
                                                      "norm_pix_loss": True, "patch_size": 8}}
