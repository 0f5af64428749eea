import math

import pytest
import torch

from mae_core.layers import patchify
from mae_core.losses import masked_mse
from mae_core.masking import running_cell_masking
from mae_core.testing import loss_falls
from mae_video.data.synthetic import MovingShapes
from mae_video.methods.videomae import VideoMAE, tube_masking
from mae_video.testing import tiny_clips_cfg, tiny_videomae_cfg


def _video(b=2, t=8, s=16, seed=0):
    return torch.randn(b, 3, t, s, s, generator=torch.Generator().manual_seed(seed))


def test_tubelet_round_trip_and_token_order():
    torch.manual_seed(0)
    m = VideoMAE(tiny_videomae_cfg(tubelet_size=2, patch_size=4))
    v = _video()
    target = m.target({"video": v})
    assert target.shape == (2, 4 * 4 * 4, 2 * 4 * 4 * 3)
    assert torch.equal(m.unpatchify(target), v)
    # the conv tubelet embedding sees the same tubelet as the patchified target at every token index
    w = m.patch_embed.proj.weight  # (D, C, pt, ph, pw)
    lin = target @ w.permute(0, 2, 3, 4, 1).reshape(w.shape[0], -1).T + m.patch_embed.proj.bias
    assert torch.allclose(m.patch_embed(v), lin, atol=1e-4)
    # the position embedding is fixed sin-cos over (T', H', W'), not learned
    assert m.pos_embed.shape == (1, 64, 32) and not m.pos_embed.requires_grad
    assert all(n != "pos_embed" for n, _ in m.named_parameters())


def test_tube_mask_identical_over_time():
    m = VideoMAE(tiny_videomae_cfg(mask_ratio=0.9))
    v = _video(b=4)
    tokens, _ = m.tokenize({"video": v})
    info = m.make_mask({"video": v}, tokens, torch.Generator().manual_seed(3))
    mask = info.mask.reshape(4, 4, 16)  # (B, T', H'W')
    assert torch.equal(mask, mask[:, :1].expand_as(mask))
    assert (mask[:, 0].sum(1) == int(0.9 * 16)).all()  # the reference count: 14 masked, 2 visible per slot
    assert not torch.equal(mask[0], mask[1])  # one draw per sample


def test_tube_mask_visible_count_is_the_reference_one():
    # TubeMaskingGenerator: int(0.9 * 196) = 176 masked -> 20 visible per frame (int(196 * 0.1) would give 19)
    info = tube_masking(2, (8, 14, 14), 0.9, torch.Generator().manual_seed(0))
    assert (info.mask.reshape(2, 8, 196).sum(-1) == 176).all() and info.num_keep == 8 * 20
    assert tube_masking(1, (2, 4, 4), 0.75).num_keep == 2 * 4 and tube_masking(1, (1, 4, 4), 0.5).num_keep == 8


def test_reference_dual_masking_decoder_input_by_hand():
    # the reference forward on boolean masks: x_full = [x_vis + pos[~mask], mask_token + pos[~decode_mask]],
    # predictions of the last M tokens, loss on bool_masked_pos[~decode_masked_pos]
    torch.manual_seed(0)
    m = VideoMAE(tiny_videomae_cfg(decoder_mask_ratio=0.5)).eval()
    v = _video(b=2)
    out = m({"video": v}, generator=torch.Generator().manual_seed(1))
    enc, dec = out.extra["encoder_mask"].bool(), out.extra["decoder_mask"].bool()
    length = enc.shape[1]
    assert out.metrics["decoder_tokens"] == (2 * 4 + length // 2) / length  # 2 visible of 16 per slot x 4 slots
    # some decoder-kept positions were seen by the encoder: they get a mask token too
    assert ((~enc) & (~dec)).any()
    tokens, pos = m.tokenize({"video": v})
    g = torch.Generator().manual_seed(1)
    info = m.make_mask({"video": v}, tokens, g)
    latent = m.forward_encoder(tokens, pos, info)
    d = m.decoder
    dpos = d.pos_embed.expand(2, -1, -1)
    x_vis = d.embed(latent)
    # the encoder keeps the visible tokens in ids_keep order; the reference keeps position order: sort to compare
    order = info.ids_keep.argsort(1)
    x_vis = torch.gather(x_vis, 1, order[..., None].expand_as(x_vis))
    x_full = torch.cat([x_vis + dpos[~enc].reshape(2, -1, 32), d.mask_token + dpos[~dec].reshape(2, -1, 32)], 1)
    for blk in d.blocks:
        x_full = blk(x_full)
    n_mask = int((~dec[0]).sum())
    ref_pred = d.pred(d.norm(x_full[:, -n_mask:]))
    assert torch.allclose(out.pred[~dec].reshape(2, n_mask, -1), ref_pred, atol=1e-5)
    labels = out.target[~dec].reshape(2, n_mask, -1)
    cal = enc[~dec].reshape(2, n_mask).float()
    ref_loss = (((ref_pred - labels) ** 2).mean(-1) * cal).sum() / cal.sum()
    assert torch.allclose(out.loss, ref_loss, atol=1e-6)
    assert torch.equal(out.mask.bool(), enc & ~dec)


def test_running_cell_mask_pattern_and_ratio():
    t, h, w = 8, 4, 6
    info = running_cell_masking(3, (t, h, w), 0.5, torch.Generator().manual_seed(0))
    mask = info.mask.reshape(3, t, h, w)
    assert mask.mean().item() == 0.5
    cells = mask.reshape(3, t, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(3, t, h // 2, w // 2, 4)
    assert (cells.sum(-1) == 2).all()  # every 2x2 cell keeps exactly two slots in every frame
    assert (cells == cells[:, :, :1, :1]).all()  # every cell of a frame has the same pattern
    # the pattern in cell slot order (0, 1, 2, 3) rotates by one slot every frame
    for f in range(t - 1):
        assert torch.equal(cells[:, f + 1, 0, 0], torch.roll(cells[:, f, 0, 0], shifts=-1, dims=1))


@pytest.mark.parametrize("frames", [8, 6])
def test_dual_masking_loss_covers_exactly_the_intersection(frames):
    torch.manual_seed(0)
    m = VideoMAE(tiny_videomae_cfg(num_frames=frames, decoder_mask_ratio=0.5, decoder_tokens="masked")).eval()
    v = _video(b=3, t=frames)
    out = m({"video": v}, generator=torch.Generator().manual_seed(1))
    enc, dec = out.extra["encoder_mask"], out.extra["decoder_mask"]
    inter = enc * (1 - dec)
    assert torch.equal(out.mask, inter)
    select = out.extra["select"]
    for b in range(3):
        chosen = set(select[b].tolist())
        assert set((enc[b] == 0).nonzero().flatten().tolist()) <= chosen  # every visible token is decoded
        assert set(inter[b].nonzero().flatten().tolist()) <= chosen
        if frames == 8:  # T' = 4 is a multiple of the running-cell period: nothing else is decoded
            assert len(chosen) == int((enc[b] == 0).sum() + inter[b].sum())
    if frames == 8:
        assert select.shape[1] < enc.shape[1] * 0.6  # the decoder sees about 55 % of the tokens
    # the loss is the MSE over the intersection only
    expected = masked_mse(out.pred, out.target, inter)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    # changing the pixels of a token outside the intersection that the encoder cannot see leaves the loss as it is;
    # changing one inside the intersection changes it
    grid = m.video_grid(v)
    outside = ((enc[0] == 1) & (dec[0] == 1)).nonzero().flatten()[0].item()
    inside = inter[0].nonzero().flatten()[0].item()

    def bump(idx):
        tokens = patchify(v, m.patch).clone()
        tokens[0, idx] = torch.randn(tokens.shape[-1])
        return m.unpatchify(tokens, grid)
    same = m({"video": bump(outside)}, generator=torch.Generator().manual_seed(1)).loss
    diff = m({"video": bump(inside)}, generator=torch.Generator().manual_seed(1)).loss
    assert torch.allclose(same, out.loss, atol=1e-6)
    assert not torch.allclose(diff, out.loss, atol=1e-4)


def test_plain_videomae_decodes_every_token():
    m = VideoMAE(tiny_videomae_cfg(decoder_mask_ratio=0.0))
    out = m({"video": _video()}, generator=torch.Generator().manual_seed(0))
    assert out.metrics["decoder_tokens"] == 1.0
    assert torch.equal(out.mask, out.extra["encoder_mask"])


def test_target_normalised_per_channel():
    m = VideoMAE(tiny_videomae_cfg())
    t = m.prepare_target(m.target({"video": _video()}))
    t = t.reshape(*t.shape[:2], -1, 3)  # (B, L, pixels, C)
    assert torch.allclose(t.mean(2), torch.zeros(()), atol=1e-5)
    assert torch.allclose(t.std(2, unbiased=True), torch.ones(()), atol=1e-3)


def test_videomae_loss_falls():
    torch.manual_seed(0)
    ds = MovingShapes(tiny_clips_cfg(num_train=16), "train")
    batch = {"video": torch.stack([ds[i]["video"] for i in range(16)])}
    first, last = loss_falls(VideoMAE(tiny_videomae_cfg()), batch, steps=30, lr=2e-3)
    assert last < 0.8 * first


def test_dense_features_and_reconstruction_shapes():
    m = VideoMAE(tiny_videomae_cfg())
    v = _video()
    assert m.frame_features(v).shape == (2, 8, 4, 4, 32)
    hidden, recon = m.reconstruct_video(v, torch.Generator().manual_seed(0))
    assert hidden.shape == (2, 8, 16, 16) and recon.shape == v.shape
    assert math.isclose(hidden.mean().item(), int(0.9 * 16) / 16)
    # visible tubelets are pasted back unchanged
    vis = hidden[:, None].expand_as(v) == 0
    assert torch.allclose(recon[vis], v[vis], atol=1e-5)
    # the raw prediction, de-normalised per tubelet and channel with the true mean / unbiased std, is the
    # reconstruction at hidden tubelets (checked by hand on one hidden tubelet)
    h2, recon2, raw = m.reconstruct_video(v, torch.Generator().manual_seed(0), return_raw=True)
    assert torch.equal(h2, hidden) and torch.allclose(recon2, recon) and raw.shape == v.shape
    t, y, x = (hidden[0] == 1).nonzero()[0].tolist()
    t, y, x = t - t % 2, y - y % 4, x - x % 4  # the tubelet (2 x 4 x 4) holding that hidden pixel
    true = v[0, :, t:t + 2, y:y + 4, x:x + 4].reshape(3, -1)
    pred = raw[0, :, t:t + 2, y:y + 4, x:x + 4].reshape(3, -1)
    want = pred * (true.std(1, unbiased=True, keepdim=True) + 1e-6) + true.mean(1, keepdim=True)
    assert torch.allclose(recon[0, :, t:t + 2, y:y + 4, x:x + 4].reshape(3, -1), want, atol=1e-4)
