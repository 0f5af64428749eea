"""Audio-MAE augmentations as the reference applies them: SpecAugment in raw log-mel space (before the
normalisation), roll_mag_aug in pretraining, and the reference's pretraining weight decay."""
import math

import pytest
import torch

import mae_audio  # noqa: F401
from mae_audio.data import BirdCalls, BirdCallsConfig
from mae_audio.features import real_frames
from mae_audio.methods import AudioMAE, AudioMAEConfig
from mae_core import registry


def tiny(**kw):
    return AudioMAE(AudioMAEConfig(target_length=64, num_mel_bins=32, embed_dim=16, depth=1, num_heads=2,
                                   decoder_embed_dim=16, decoder_depth=2, decoder_num_heads=2, **kw))


def test_real_frames_hand_built():
    f = torch.zeros(3, 6, 2)
    f[0, :4] = -3.0
    f[1, :6] = -1.0
    f[1, 2] = 0.0  # a zero frame inside the clip does not end it
    assert real_frames(f).tolist() == [4, 6, 1]


def test_dataset_gives_real_frames():
    ds = BirdCalls(BirdCallsConfig(target_length=64, num_mel_bins=32, num_train=2, num_test=1, clip_seconds=0.3),
                   "train")
    assert ds.frames.tolist() == [28, 28]  # (0.3 s * 32 kHz - 800) // 320 + 1 frames, then padded to 64
    assert int(ds[0]["frames"]) == 28


def test_spec_augment_fills_raw_log_mel_zero():
    m = tiny(norm_mean=-5.0, norm_std=4.0, ft_freq_mask=16, ft_time_mask=32)
    assert m.raw_zero() == pytest.approx(5.0 / 8.0)  # (0 - (-5)) / (2 * 4)
    torch.manual_seed(0)
    x = torch.full((64, 1, 64, 32), -1.0)
    y = m.spec_augment(x)
    filled = y != -1.0
    assert filled.any()
    assert torch.all(y[filled] == 0.625)
    # the masks are whole frequency rows / time columns of one sample
    assert tiny().raw_zero() == 0.0  # unknown statistics: the old fill (0 = the mean)


def test_roll_mag_rolls_real_frames_and_adds_a_gain():
    m = tiny(norm_mean=-5.0, norm_std=4.0)
    torch.manual_seed(3)
    x = torch.randn(16, 1, 64, 32)
    x[:, :, 40:] = m.raw_zero()  # raw zero padding after 40 real frames
    frames = torch.full((16,), 40)
    out = m.roll_mag({"x": x, "frames": frames}, torch.Generator().manual_seed(0))["x"]
    assert torch.equal(out[:, :, 40:], x[:, :, 40:])  # the padding stays
    shifts, gains = [], []
    for b in range(16):
        d = out[b, 0, :40] - x[b, 0, :40]
        for s in range(40):
            c = out[b, 0, :40] - torch.roll(x[b, 0, :40], s, 0)
            if torch.allclose(c, c[0, 0].expand_as(c), atol=1e-5):
                shifts.append(s)
                gains.append(math.exp(float(c[0, 0]) * 4.0))  # offset = ln(g) / std
                break
        else:
            raise AssertionError(f"sample {b}: not a roll plus a constant ({d.std()})")
    assert all(0.5 <= g <= 1.5 for g in gains)
    assert len(set(shifts)) > 4  # random shifts in [0, 40)


def test_roll_mag_only_in_pretraining_forward():
    m = tiny()
    x = torch.randn(2, 1, 64, 32)
    m.eval()
    a = m({"x": x}, torch.Generator().manual_seed(0)).target
    b = m({"x": x}, torch.Generator().manual_seed(0)).target
    assert torch.equal(a, b)
    m.train()
    c = m({"x": x}, torch.Generator().manual_seed(0)).target
    assert not torch.equal(a, c)
    m.config.roll_mag_aug = False
    assert torch.equal(m({"x": x}, torch.Generator().manual_seed(0)).target, a)


def test_reference_pretraining_weight_decay_and_data_statistics():
    assert registry.get_method("audio-mae", "audio").train_defaults["weight_decay"] == 1e-4
    spec = registry.get_method("audio-mae", "audio")
    dcfg = BirdCallsConfig(norm_mean=-6.0, norm_std=3.0, target_length=64, num_mel_bins=32)
    cfg = spec.adapt(AudioMAEConfig(), dcfg, None)
    assert (cfg.norm_mean, cfg.norm_std, cfg.target_length, cfg.num_mel_bins) == (-6.0, 3.0, 64, 32)


def test_same_generator_same_training_loss():
    # roll_mag_aug's gain and the decoder's position-bias dropout follow the generator
    m = tiny(norm_mean=-5.0, norm_std=4.0).train()
    x = torch.randn(4, 1, 64, 32)
    a = m({"x": x}, torch.Generator().manual_seed(5)).loss
    b = m({"x": x}, torch.Generator().manual_seed(5)).loss
    c = m({"x": x}, torch.Generator().manual_seed(6)).loss
    assert float(a.detach()) == float(b.detach()) and float(a.detach()) != float(c.detach())
