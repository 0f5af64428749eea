import torch

from mae_core.testing import loss_falls
from mae_video.data.synthetic import MovingShapes
from mae_video.methods.cropmae import CropMAE, crop_resize, random_boxes
from mae_video.methods.siamese import PostNormCrossBlock
from mae_video.methods.siammae import SiamMAE, gap_range
from mae_video.testing import tiny_clips_cfg, tiny_cropmae_cfg, tiny_siammae_cfg


def _clips(n=8, frames=4):
    ds = MovingShapes(tiny_clips_cfg(num_train=n, num_frames=frames), "train")
    return {"video": torch.stack([ds[i]["video"] for i in range(n)])}


def test_siamese_decoder_attends_to_the_other_view():
    torch.manual_seed(0)
    m = SiamMAE(tiny_siammae_cfg()).eval()
    a, b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    out = m.forward_views(a, b, torch.Generator().manual_seed(0))
    other = m.forward_views(torch.randn(2, 3, 16, 16), b, torch.Generator().manual_seed(0))
    assert torch.equal(out.mask, other.mask)  # same mask of the second view
    assert not torch.allclose(out.pred, other.pred, atol=1e-4)  # the prediction depends on the unmasked view
    # and the gradient of the loss reaches the unmasked view's pixels through the cross-attention
    a = a.clone().requires_grad_(True)
    m.forward_views(a, b, torch.Generator().manual_seed(0)).loss.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_reference_decoder_block_is_post_norm_cross_ffn_self():
    import torch.nn.functional as F

    m = SiamMAE(tiny_siammae_cfg(decoder_depth=2))
    blocks = m.decoder.blocks
    assert len(blocks) == 2 and all(isinstance(b, PostNormCrossBlock) for b in blocks)
    blk = blocks[0]
    # dropout 0.1 on the attention weights of both attentions, inside the FFN and on the three residual branches
    assert blk.cross.dropout == 0.1 and blk.attn.dropout == 0.1
    assert [d.p for d in blk.modules() if isinstance(d, torch.nn.Dropout)] == [0.1] * 4
    blk.eval()
    torch.manual_seed(0)
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 9, 32)

    def mha(a, q, kv):  # softmax(q Wq (kv Wk)^T / sqrt(d_head)) kv Wv, per head, then the output projection
        wq, wk, wv = a.in_proj_weight.chunk(3)
        bq, bk, bv = a.in_proj_bias.chunk(3)
        h = a.num_heads
        split = lambda t: t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2)  # noqa: E731
        qh, kh, vh = split(q @ wq.T + bq), split(kv @ wk.T + bk), split(kv @ wv.T + bv)
        att = torch.softmax(qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5, -1) @ vh
        return a.out_proj(att.transpose(1, 2).reshape(q.shape))

    ln = lambda t, n: F.layer_norm(t, (32,), n.weight, n.bias, 1e-6)  # noqa: E731
    y = ln(x + mha(blk.cross, x, ctx), blk.norm_cross)  # cross-attention first, the context not normalised
    y = ln(y + blk.ffn(y), blk.norm_ffn)
    y = ln(y + mha(blk.attn, y, y), blk.norm_self)  # self-attention last
    assert torch.allclose(blk(x, ctx), y, atol=1e-5)
    # post-norm: every output token is layer-normalised (unit LayerNorm at init)
    out = blk(x, ctx)
    assert torch.allclose(out.mean(-1), torch.zeros(2, 5), atol=1e-5)
    # in training, dropout makes two passes differ
    blk.train()
    assert not torch.allclose(blk(x, ctx), blk(x, ctx))


def test_reference_context_has_no_decoder_position():
    # without positions on the context, the decoder is blind to the order of the unmasked view's tokens
    torch.manual_seed(0)
    for block, same in (("reference", True), ("prenorm", False)):
        m = SiamMAE(tiny_siammae_cfg(decoder_block=block)).eval()
        lat, ctx = torch.randn(2, 2, 32), torch.randn(2, 17, 32)
        ids = torch.arange(16).repeat(2, 1)
        perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(16)])
        a = m.decoder(lat, ids, ctx)
        b = m.decoder(lat, ids, ctx[:, perm])
        assert torch.allclose(a, b, atol=1e-5) == same, block


def test_siammae_gap_is_the_reference_randint_and_the_crop_is_shared():
    # the reference draws randint(min(4, n - 1), min(48, n)): on 8-frame clips gaps 4, 5, 6, 7, uniformly
    assert gap_range(8, 4, 48) == (4, 8) and gap_range(100, 4, 48) == (4, 48) and gap_range(3, 4, 48) == (2, 3)
    m = SiamMAE(tiny_siammae_cfg())
    n = 4000
    ramp = (2 * torch.arange(16.0) + 1) / 16 - 1  # pixel-centre x coordinates in [-1, 1]
    video = torch.arange(8.0).view(1, 1, 8, 1, 1) * 10 + ramp.view(1, 1, 1, 1, 16)  # frame index x 10 + x ramp
    video = video.expand(n, 3, 8, 16, 16).contiguous()
    first, second = m.make_views({"video": video}, torch.Generator().manual_seed(0))
    diff = second - first
    gap = diff[:, 0, 0, 0] / 10
    # one crop and one flip for both frames: the difference is the same constant everywhere
    assert torch.allclose(diff, (gap * 10).view(-1, 1, 1, 1).expand_as(diff), atol=1e-4)
    counts = torch.bincount(gap.round().long(), minlength=8)[4:]
    assert counts.sum() == n and (counts > 0.2 * n).all() and (counts < 0.3 * n).all()
    # the x ramp shows the crop width (area 0.5-1 of the frame) and the flip (half of the clips)
    span = (first[:, 0, 0, -1] - first[:, 0, 0, 0]).abs() / 2 * 16 / 15  # crop half-width in [-1, 1] units
    slope = first[:, 0, 0, -1] - first[:, 0, 0, 0]
    assert span.max() <= 1 + 1e-4 and span.min() > 0.5 ** 0.5 * 0.75 ** 0.5 - 1e-3 and (span < 0.95).any()
    assert 0.45 < (slope < 0).float().mean() < 0.55


def test_cropmae_crops_and_independent_flips_as_the_reference():
    m = CropMAE(tiny_cropmae_cfg())
    n, s = 4000, 32
    coord = (2 * torch.arange(s) + 1) / s - 1  # pixel-centre coordinates in [-1, 1]
    img = torch.stack([coord.view(1, s).expand(s, s), coord.view(s, 1).expand(s, s), torch.zeros(s, s)])
    g, loc = m.make_views({"image": img.expand(n, 3, s, s).contiguous()}, torch.Generator().manual_seed(0))

    def box(v):  # half-width, half-height and the flip of a crop of the coordinate image
        sx = v[:, 0, 0, -1] - v[:, 0, 0, 0]
        sy = v[:, 1, -1, 0] - v[:, 1, 0, 0]
        return sx.abs() / 2 * s / (s - 1), sy.abs() / 2 * s / (s - 1), sx < 0

    gw, gh, gflip = box(g)
    lw, lh, lflip = box(loc)
    garea, rel = gw * gh, (lw * lh) / (gw * gh)  # global: fraction of the image; local: of the global crop
    assert garea.min() > 0.1 * 0.98 and garea.max() < 1.0001 and garea.min() < 0.15
    # clipping of the sides to the parent only shrinks a crop: the local area stays in (0, 0.6]
    assert rel.max() < 0.6 * 1.02 and (rel > 0.3 * 0.98).float().mean() > 0.9
    assert 0.45 < gflip.float().mean() < 0.55 and 0.45 < lflip.float().mean() < 0.55
    assert 0.45 < (gflip != lflip).float().mean() < 0.55  # independent flips


def test_siammae_mask_ratio_and_loss_falls():
    torch.manual_seed(0)
    m = SiamMAE(tiny_siammae_cfg())
    out = m(_clips(), generator=torch.Generator().manual_seed(0))
    assert out.mask.shape == (8, 16) and (out.mask.sum(1) == 16 - 1).all()  # 0.95 of 16 patches: one visible
    first, last = loss_falls(SiamMAE(tiny_siammae_cfg()), _clips(), steps=25, lr=2e-3)
    assert last < 0.85 * first


def test_cropmae_local_crop_lies_inside_global_and_loss_falls():
    u = torch.rand(256, 4, generator=torch.Generator().manual_seed(0))
    boxes = random_boxes(u, (0.4, 1.0), (0.75, 1.333))
    assert ((boxes[:, 0].abs() + boxes[:, 2]) <= 1 + 1e-6).all() and ((boxes[:, 1].abs() + boxes[:, 3]) <= 1 + 1e-6).all()
    area = boxes[:, 2] * boxes[:, 3]
    assert (area <= 1.0 + 1e-6).all() and (area >= 0.4 * 0.999).all()
    # the identity box returns the image
    img = torch.randn(2, 3, 16, 16)
    ident = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(2, 4)
    assert torch.allclose(crop_resize(img, ident, 16), img, atol=1e-5)
    torch.manual_seed(0)
    m = CropMAE(tiny_cropmae_cfg())
    out = m(_clips(), generator=torch.Generator().manual_seed(0))
    assert (out.mask.sum(1) == 15).all()  # 0.985 would leave no patch: one stays visible
    first, last = loss_falls(CropMAE(tiny_cropmae_cfg()), _clips(), steps=25, lr=2e-3)
    assert last < 0.85 * first


def test_siamese_features_per_frame():
    m = SiamMAE(tiny_siammae_cfg(num_frames=4))
    batch = _clips(n=2)
    assert m.encode(batch).shape == (2, m.feature_dim())
    assert m.frame_features(batch["video"]).shape == (2, 4, 4, 4, 32)
    hidden, recon = m.reconstruct_video(batch["video"], torch.Generator().manual_seed(0))
    assert hidden.shape == (2, 4, 16, 16) and recon.shape == batch["video"].shape
    assert torch.equal(recon[:, :, 0], batch["video"][:, :, 0])
    m.eval()  # decoder dropout off: both calls see the same mask and weights
    hidden, recon = m.reconstruct_video(batch["video"], torch.Generator().manual_seed(0))
    _, recon2, raw = m.reconstruct_video(batch["video"], torch.Generator().manual_seed(0), return_raw=True)
    assert torch.allclose(recon2, recon) and raw.shape == recon.shape and torch.equal(raw[:, :, 0], raw[:, :, 1])
