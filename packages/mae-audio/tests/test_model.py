"""Audio-MAE / Bird-MAE: patch grid, masking variants, decoders, loss falls, fine-tuning augmentations."""
import pytest
import torch

from mae_core.masking import MaskInfo
from mae_core.testing import loss_falls
from mae_audio.methods import AudioMAE, AudioMAEConfig, BirdMAE, BirdMAEConfig, audio_mask
from mae_audio.methods.audio_mae import LocalWindowDecoder, window_attn_mask

TINY = dict(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2)


def tiny(cls=AudioMAE, **kw):
    torch.manual_seed(0)
    cfg_cls = BirdMAEConfig if cls is BirdMAE else AudioMAEConfig
    return cls(cfg_cls(**{**TINY, **kw}))


@pytest.mark.parametrize("target_length,mels,grid", [(1024, 128, (64, 8)), (512, 128, (32, 8)), (128, 128, (8, 8)),
                                                     (96, 64, (6, 4))])
def test_patch_grid_follows_target_length(target_length, mels, grid):
    m = tiny(target_length=target_length, num_mel_bins=mels)
    assert m.grid == grid and m.pos_embed.shape == (1, grid[0] * grid[1], 32)
    x = torch.randn(2, 1, target_length, mels)
    tokens, grid_out = m.token_grid({"x": x})
    assert grid_out == grid and tokens.shape == (2, grid[0] * grid[1], 32)
    # token order is (time, frequency) row-major: token t * F + f holds frames 16t.. and mel bins 16f..
    x = torch.zeros(1, 1, target_length, mels)
    x[0, 0, 16:32, 32:48] = 1.0
    tgt = m.target({"x": x})
    assert tgt.shape == (1, grid[0] * grid[1], 256) and int(tgt.sum(-1).argmax()) == 1 * grid[1] + 2


def test_masking_variants_counts_and_structure():
    grid, b = (8, 4), 5
    g = torch.Generator().manual_seed(0)
    m = audio_mask("random", b, grid, 0.8, g)
    assert isinstance(m, MaskInfo) and (m.mask.sum(1) == 32 - int(32 * 0.2)).all()
    m = audio_mask("time", b, grid, 0.75, g).mask.reshape(b, 8, 4)
    assert (m.amin(2) == m.amax(2)).all() and (m[:, :, 0].sum(1) == 6).all()  # whole columns, 6 of 8 masked
    m = audio_mask("frequency", b, grid, 0.5, g).mask.reshape(b, 8, 4)
    assert (m.amin(1) == m.amax(1)).all() and (m[:, 0].sum(1) == 2).all()  # whole rows, 2 of 4 masked
    info = audio_mask("time+frequency", b, grid, 0.75, g)
    m = info.mask.reshape(b, 8, 4)
    kept = 1 - m
    # visible patches form a (kept columns) x (kept rows) sub-grid
    assert (kept.sum((1, 2)) == int(8 * 0.5) * int(4 * 0.5)).all()
    cols, rows = kept.amax(2), kept.amax(1)
    assert torch.equal(kept, cols[:, :, None] * rows[:, None, :])
    # the generator decides: same seed, same mask; different seed, different mask
    a = audio_mask("random", b, grid, 0.8, torch.Generator().manual_seed(3)).mask
    assert torch.equal(a, audio_mask("random", b, grid, 0.8, torch.Generator().manual_seed(3)).mask)
    assert not torch.equal(a, audio_mask("random", b, grid, 0.8, torch.Generator().manual_seed(4)).mask)


def test_window_masks_are_local_and_shifted():
    grid = (8, 2)
    plain = window_attn_mask(grid, 4, 0)
    shifted = window_attn_mask(grid, 4, 2)
    t = torch.arange(8).repeat_interleave(2)
    assert torch.equal(plain, (t[:, None] // 4) == (t[None] // 4))
    assert plain[0, 7] and not plain[0, 8]  # tokens of time 0..3 together
    assert shifted[4, 11] and not shifted[4, 3] and not shifted[4, 12]  # time 2..5 together after the shift
    assert shifted[0, 3] and not shifted[0, 4]  # edge window: time 0..1


def test_local_decoder_is_local():
    """A change of the input at one time step moves only the local decoder's predictions within reach."""
    m = tiny(decoder_mode="local", decoder_window=2, decoder_depth=1, target_length=128).eval()
    assert isinstance(m.decoder, LocalWindowDecoder)
    x = torch.randn(1, 1, 128, 128)
    mask = torch.zeros(1, 64)
    mask[0, 1::2] = 1.0
    with torch.no_grad():
        a = m({"x": x, "mask": mask}).pred
        lat = m.forward_encoder(*m.tokenize({"x": x}), m.make_mask({"x": x, "mask": mask}, m.tokenize({"x": x})[0]))
        info = m.make_mask({"x": x, "mask": mask}, m.tokenize({"x": x})[0])
        lat2 = lat.clone()
        lat2[:, 1:] = lat2[:, 1:] + 0.5 * (torch.arange(lat2.shape[1] - 1) < 4)[None, :, None]  # visible at time 0,1
        p1 = m.decoder(lat, info.ids_restore)
        p2 = m.decoder(lat2, info.ids_restore)
    changed = (p1 - p2).abs().sum(-1)[0].reshape(8, 8).sum(1) > 1e-6
    assert changed[:2].all() and not changed[2:].any()  # window of 2 time steps, one block: no leak
    assert a.shape == (1, 64, 256)
    plain = tiny(decoder_mode="plain").eval()
    assert not isinstance(plain.decoder, LocalWindowDecoder)


@pytest.mark.parametrize("cls,kw", [(AudioMAE, {"decoder_mode": "local"}), (AudioMAE, {"mask_strategy": "time+frequency"}),
                                    (AudioMAE, {"decoder_mode": "swin"}), (BirdMAE, {})])
def test_loss_falls(cls, kw):
    # one fixed batch is memorised: without roll_mag_aug, which changes the batch at every step
    m = tiny(cls, target_length=64, num_mel_bins=64, roll_mag_aug=False, **kw)
    torch.manual_seed(1)
    base = torch.randn(4, 1, 16, 64).repeat(1, 1, 4, 1)
    first, last = loss_falls(m, {"x": base}, steps=40, lr=3e-3)
    assert last < 0.8 * first


def test_bird_mae_defaults():
    c = BirdMAEConfig()
    assert c.mask_ratio == 0.75 and c.decoder_mode == "plain" and c.mask_strategy == "random"
    assert AudioMAEConfig().mask_ratio == 0.8
    from mae_core.registry import get_preset
    import mae_audio  # noqa: F401
    p = get_preset("bird-mae", "audio")
    assert p.overrides["data"] == {"sample_rate": 32000, "target_length": 512, "norm_mean": -7.2, "norm_std": 4.43}
    m = tiny(BirdMAE, target_length=512)
    assert m.grid == (32, 8)


def test_norm_pix_loss_only_on_masked_patches():
    m = tiny(target_length=64, num_mel_bins=64).eval()
    x = torch.randn(2, 1, 64, 64)
    out = m({"x": x}, generator=torch.Generator().manual_seed(0))
    tgt = m.target({"x": x})
    tn = (tgt - tgt.mean(-1, keepdim=True)) / (tgt.var(-1, keepdim=True) + 1e-6).sqrt()
    per = ((out.pred - tn) ** 2).mean(-1)
    assert torch.allclose(out.loss, (per * out.mask).sum() / out.mask.sum(), atol=1e-5)


def test_finetune_augmentations_only_in_training():
    m = tiny(target_length=64, num_mel_bins=64, ft_mixup=1.0, ft_token_drop_time=0.25, ft_token_drop_freq=0.25)
    x = torch.randn(4, 1, 64, 64)
    y = torch.tensor([0, 1, 2, 3])
    batch = {"x": x.clone(), "label": y.clone(), "onehot": torch.nn.functional.one_hot(y, 5).float()}
    m.train()
    torch.manual_seed(0)
    feats = m.finetune_features({"x": x})
    assert feats.shape[1] == 1 + 3 * 3  # token dropping: 3 of 4 time columns x 3 of 4 frequency rows kept
    f = m.encode(batch)
    assert f.shape == (4, 32)
    assert batch["label"].shape == (4, 5) and torch.allclose(batch["label"].sum(1), torch.ones(4))  # mixed, soft
    assert not torch.equal(batch["x"], x)
    m.eval()
    b2 = {"x": x.clone(), "label": y.clone()}
    e1, e2 = m.encode(b2), m.encode({"x": x.clone()})
    assert torch.equal(e1, e2) and torch.equal(b2["label"], y)  # eval: no augmentation, labels untouched
    assert m.forward_features({"x": x}).shape[1] == 1 + 16
    m.train()
    assert m.token_grid({"x": x})[0].shape[1] == 16  # probes see every token


def test_picture_prediction_alone_and_true_statistics(tmp_path):
    # with norm_pix_loss the reconstruction at a masked patch is the raw prediction x sqrt(var + 1e-6) + mean of
    # the true patch (checked by hand on one masked patch); the picture gets a fifth column, the prediction alone
    from PIL import Image

    from mae_audio.viz import save_spectrogram_reconstruction, spectrogram_reconstruction
    m = tiny(target_length=96, num_mel_bins=64)
    x = torch.randn(2, 1, 96, 64)
    orig, masked, recon, pasted, mask, raw = spectrogram_reconstruction(m, x)
    t, f = (mask[0] == 1).nonzero()[0].tolist()
    t, f = t - t % 16, f - f % 16
    true, pred = x[0, 0, t:t + 16, f:f + 16], raw[0, t:t + 16, f:f + 16]
    want = pred * (true.var(unbiased=True) + 1e-6).sqrt() + true.mean()
    assert torch.allclose(recon[0, t:t + 16, f:f + 16], want, atol=1e-4)
    assert torch.allclose(pasted[mask == 0], orig[mask == 0])
    ds = [{"x": x[i]} for i in range(2)]
    wide = Image.open(save_spectrogram_reconstruction(m, ds, tmp_path / "a.png")).size[0]
    m.norm_pix_loss = False
    _, _, recon, _, _, raw = spectrogram_reconstruction(m, x)
    assert torch.equal(recon, raw)
    assert wide > 1.15 * Image.open(save_spectrogram_reconstruction(m, ds, tmp_path / "b.png")).size[0]
