import math

import numpy as np
import pytest
import torch

from mae_core.errors import MaeError
from mae_core.layers import PatchEmbed2d, PatchEmbed3d, patchify, resize_pos_embed, sincos_1d, sincos_pos_embed, unpatchify


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("shape,patch", [
    ((24,), (4,)),  # 1-D
    ((16, 24), (4, 8)),  # 2-D non-square
    ((8, 12, 16), (2, 4, 4)),  # 3-D volume
    ((4, 16, 8), (2, 4, 4)),  # T x H x W tubelets
])
def test_patchify_round_trip(channels, shape, patch):
    x = torch.randn(2, channels, *shape)
    tokens = patchify(x, patch)
    grid = tuple(s // p for s, p in zip(shape, patch))
    assert tokens.shape == (2, math.prod(grid), math.prod(patch) * channels)
    assert torch.equal(unpatchify(tokens, patch, grid, channels), x)


def test_patchify_layout_matches_mae_reference():
    # MAE: x.reshape(N, C, h, p, w, q) -> einsum nchpwq->nhwpqc
    x = torch.randn(2, 3, 8, 12)
    p = 4
    ref = torch.einsum("nchpwq->nhwpqc", x.reshape(2, 3, 2, p, 3, p)).reshape(2, 6, p * p * 3)
    assert torch.equal(patchify(x, p), ref)


def test_patchify_rejects_indivisible():
    with pytest.raises(MaeError, match="not divisible"):
        patchify(torch.randn(1, 3, 10, 10), 4)


def test_patch_embed_token_order_matches_patchify():
    emb = PatchEmbed2d((4, 2), 3, 8)
    x = torch.randn(2, 3, 8, 6)
    tokens = emb(x)
    flat = patchify(x, (4, 2))  # (B, L, p*q*C) ordered (p, q, c)
    w = emb.proj.weight.permute(0, 2, 3, 1).reshape(8, -1)  # (D, p*q*C) in the same order
    assert torch.allclose(tokens, flat @ w.T + emb.proj.bias, atol=1e-5)
    emb3 = PatchEmbed3d((2, 4, 4), 1, 16)
    assert emb3(torch.randn(2, 1, 4, 8, 12)).shape == (2, 2 * 2 * 3, 16)


@pytest.mark.parametrize("ndim,patch,chans,size", [(2, (4, 2), 3, (8, 6)), (3, (2, 4, 4), 4, (4, 8, 12)),
                                                   (1, (5,), 2, (20,))])
def test_embed_patches_equals_convolution(ndim, patch, chans, size):
    from mae_core.layers import PatchEmbed
    emb = PatchEmbed(patch, chans, 8, ndim=ndim)
    x = torch.randn(2, chans, *size)
    assert torch.allclose(emb.embed_patches(patchify(x, patch)), emb(x), atol=1e-5)


def test_image_mae_embeds_only_visible_patches():
    from mae_core.models.image_mae import ImageMAE, ImageMAEConfig
    model = ImageMAE(ImageMAEConfig(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                                    decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2))
    seen = []
    orig = model.patch_embed.embed_patches
    model.patch_embed.embed_patches = lambda t: seen.append(t.shape[1]) or orig(t)
    out = model({"image": torch.randn(2, 3, 16, 16)}, generator=torch.Generator().manual_seed(0))
    assert seen == [4]  # 16 patches, mask 0.75 -> 4 visible are embedded
    out.loss.backward()
    assert model.patch_embed.proj.weight.grad is not None and model.patch_embed.proj.weight.grad.abs().sum() > 0
    # unmasked features: the linear path equals the convolution path
    x = torch.randn(2, 3, 16, 16)
    ref = model.encoder(model.patch_embed(x), model.pos_embed)
    assert torch.allclose(model.forward_features({"image": x}), ref, atol=1e-5)


def _mae_numpy_2d(embed_dim, grid_size):
    """The MAE reference implementation (util/pos_embed.py), transcribed for the known-value check."""
    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    gh = np.arange(grid_size, dtype=np.float32)
    gw = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(gw, gh), axis=0)
    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


def test_sincos_known_values():
    e = sincos_1d(4, torch.tensor([0.0, 1.0]))
    # omega = [1, 1/100]; pos 0 -> sin 0, cos 1; pos 1 -> sin(1), sin(0.01), cos(1), cos(0.01)
    expected = torch.tensor([[0, 0, 1, 1], [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)]],
                            dtype=torch.float64)
    assert torch.allclose(e, expected)
    ours = sincos_pos_embed(16, (5, 5))
    assert np.allclose(ours.numpy(), _mae_numpy_2d(16, 5), atol=1e-6)
    with_cls = sincos_pos_embed(16, (5, 5), num_prefix_tokens=1)
    assert with_cls.shape == (26, 16) and torch.all(with_cls[0] == 0)
    e3 = sincos_pos_embed(24, (2, 3, 4))
    assert e3.shape == (24, 24)
    assert len({tuple(r.tolist()) for r in e3}) == 24  # every position distinct


def test_resize_pos_embed():
    pos = sincos_pos_embed(32, (4, 4), num_prefix_tokens=1)
    same = resize_pos_embed(pos, (4, 4), (4, 4), num_prefix_tokens=1)
    assert torch.equal(same, pos)
    big = resize_pos_embed(pos, (4, 4), (8, 6), num_prefix_tokens=1)
    assert big.shape == (1 + 48, 32) and torch.equal(big[0], pos[0])
    # corners of the resized grid stay close to the original corners (bicubic, align_corners=False)
    assert torch.allclose(big[1:].reshape(8, 6, 32)[0, 0], pos[1:].reshape(4, 4, 32)[0, 0], atol=0.35)
    vol = sincos_pos_embed(24, (2, 2, 2))
    assert resize_pos_embed(vol[None], (2, 2, 2), (4, 4, 2)).shape == (1, 32, 24)
