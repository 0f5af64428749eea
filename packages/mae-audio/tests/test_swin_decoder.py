"""The Audio-MAE local decoder against the reference (timm Swin V2-cr block as AudioMAE's decoder_mode=1 uses it):
window partition, the shift mask, the relative coordinates, the attention formula and the shift semantics."""
import math

import pytest
import torch
import torch.nn.functional as F

from mae_audio.methods import AudioMAE, AudioMAEConfig
from mae_audio.methods.swin_decoder import (SwinBlock, SwinDecoder, WindowCosineAttention, relative_coords_log,
                                            shifted_window_mask, window_partition, window_reverse)


def test_window_partition_order_and_inverse():
    # grid (4 time, 2 freq), window (2, 2): two windows, each row-major inside
    x = torch.arange(8).view(1, 4, 2, 1)
    w = window_partition(x, (2, 2))
    assert w.shape == (2, 4, 1)
    assert w[..., 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    x = torch.arange(2 * 8 * 4 * 3).float().view(2, 8, 4, 3)
    assert torch.equal(window_reverse(window_partition(x, (4, 2)), (4, 2), (8, 4)), x)
    assert window_partition(x, (4, 2)).shape == (2 * 4, 8, 3)


def test_relative_coords_log_hand_built():
    rel = relative_coords_log((2, 2)).view(4, 4, 2)
    coords = [(0, 0), (0, 1), (1, 0), (1, 1)]
    l2 = math.log(2.0)
    for i, ci in enumerate(coords):
        for j, cj in enumerate(coords):
            want = [math.copysign(math.log1p(abs(a - b)), a - b) if a != b else 0.0 for a, b in zip(ci, cj)]
            assert rel[i, j].tolist() == pytest.approx(want)
    assert rel[0, 3].tolist() == pytest.approx([-l2, -l2])
    assert relative_coords_log((4, 4)).shape == (256, 2)


def swin_slice_mask(size, window, shift):
    """Swin's own construction (three slices per axis on the rolled grid), written out for the test."""
    h, w = size
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for ws in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    mw = window_partition(img, window)[..., 0]
    d = mw[:, None, :] - mw[:, :, None]
    return torch.zeros_like(d).masked_fill(d != 0, -100.0)


@pytest.mark.parametrize("size", [(8, 4), (16, 8), (64, 8)])
def test_shift_mask_equals_swin_slices(size):
    m = shifted_window_mask(size, (4, 4), (2, 0))
    assert m.shape == (size[0] // 4 * size[1] // 4, 16, 16)
    assert torch.equal(m, swin_slice_mask(size, (4, 4), (2, 0)))
    # only the last time window is split: its first 2 time rows (8 tokens) against its last 2 (8 tokens)
    per_window = (m == -100).sum((1, 2))
    last_row = size[1] // 4
    assert per_window[:-last_row].eq(0).all() and per_window[-last_row:].eq(2 * 8 * 8).all()
    assert shifted_window_mask(size, (4, 4), (0, 0)) is None


def test_window_clipped_to_grid_is_not_shifted():
    # a 4 x 8 grid (FSDD, 64 frames): the time window is the whole grid, so the shift is dropped (the reference)
    assert shifted_window_mask((4, 8), (4, 4), (2, 0)) is None


def test_cosine_attention_formula():
    torch.manual_seed(0)
    att = WindowCosineAttention(8, 2).eval()
    with torch.no_grad():
        att.tau.copy_(torch.tensor([0.5, 0.005]))  # the second is clamped at 0.01
    x = torch.randn(3, 4, 8)
    out = att(x, (2, 2))
    q, k, v = att.qkv(x).view(3, 4, 3, 2, 4).permute(2, 0, 3, 1, 4)
    cos = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
    bias = att.meta_mlp(relative_coords_log((2, 2))).t().reshape(2, 4, 4)
    logits = cos / torch.tensor([0.5, 0.01]).view(1, 2, 1, 1) + bias
    want = att.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(3, 4, 8))
    assert torch.allclose(out, want, atol=1e-5)


def _influence(block, grid, t, f):
    """Which tokens of the block's output change when token (t, f) of the input changes."""
    torch.manual_seed(1)
    x = torch.randn(1, grid[0] * grid[1], block.norm1.normalized_shape[0])
    y = x.clone()
    y[0, t * grid[1] + f] += 1.0
    with torch.no_grad():
        d = (block(y, grid) - block(x, grid)).abs().sum(-1).view(*grid)
    return d > 1e-6


def test_plain_and_shifted_windows_reach_the_right_tokens():
    grid = (8, 8)
    plain = SwinBlock(16, 2, (4, 4), (0, 0)).eval()
    reach = _influence(plain, grid, 1, 5)
    want = torch.zeros(grid, dtype=torch.bool)
    want[0:4, 4:8] = True
    assert torch.equal(reach, want)
    shifted = SwinBlock(16, 2, (4, 4), (2, 0)).eval()
    # shifted windows over time: [2, 6) and the last rolled window, masked into [6, 8) and [0, 2)
    for t, rows in ((1, slice(0, 2)), (3, slice(2, 6)), (7, slice(6, 8))):
        want = torch.zeros(grid, dtype=torch.bool)
        want[rows, 4:8] = True
        assert torch.equal(_influence(shifted, grid, t, 6), want), t


def test_padded_grid_keeps_padding_out():
    # 5 time tokens with a window of 4: padded to 8; token 4 alone in its (padded) window in the plain block
    plain = SwinBlock(16, 2, (4, 4), (0, 0)).eval()
    reach = _influence(plain, (5, 4), 4, 0)
    want = torch.zeros(5, 4, dtype=torch.bool)
    want[4] = True
    assert torch.equal(reach, want)


def test_audio_mae_default_decoder_is_the_reference_one():
    cfg = AudioMAEConfig(target_length=128, num_mel_bins=64, embed_dim=32, depth=1, num_heads=2,
                         decoder_embed_dim=32, decoder_depth=4, decoder_num_heads=2)
    model = AudioMAE(cfg)
    assert isinstance(model.decoder, SwinDecoder)
    assert [b.shift for b in model.decoder.blocks] == [(0, 0), (2, 0), (0, 0), (2, 0)]
    assert all(b.window == (4, 4) for b in model.decoder.blocks)
    x = torch.randn(2, 1, 128, 64)
    out = model({"x": x})
    assert out.pred.shape == (2, 8 * 4, 256) and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.decoder.blocks[1].attn.tau.grad is not None
    # a clip of another length (grid 5 x 4) still decodes
    assert model.eval()({"x": torch.randn(1, 1, 80, 64)}).pred.shape == (1, 20, 256)
