"""Front end: fbank against torchaudio, normalisation constants, audio reading (WAV / FLAC / MP3), bad input."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi

from mae_core.errors import DataError
from mae_audio.data import AudioFolder, AudioFolderConfig, clear_cache
from mae_audio.features import NORM_PRESETS, dataset_stats, denormalize, fbank, normalize, pad_or_crop, read_audio


def _tone(freq=1000.0, sr=16000, seconds=0.5, amp=0.5):
    t = torch.arange(int(sr * seconds)) / sr
    return amp * torch.sin(2 * math.pi * freq * t) + 0.1  # DC offset: the front end must remove it


def test_fbank_matches_torchaudio_kaldi_on_a_tone():
    sr = 16000
    wav = _tone(sr=sr)
    ours = fbank(wav, sr)
    ref = kaldi.fbank((wav - wav.mean())[None], htk_compat=True, sample_frequency=sr, use_energy=False,
                      window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=25)
    assert ours.shape == (1 + (len(wav) - 400) // 160, 128)
    assert torch.allclose(ours, ref, atol=1e-5)
    # the energy of a 1 kHz tone sits in the mel bin whose centre is closest to 1 kHz (htk mel scale)
    mel = lambda f: 1127.0 * math.log(1 + f / 700.0)  # noqa: E731
    centres = [mel(20) + (i + 1) * (mel(sr / 2) - mel(20)) / 129 for i in range(128)]
    expected = min(range(128), key=lambda i: abs(centres[i] - mel(1000.0)))
    assert abs(int(ours.mean(0).argmax()) - expected) <= 1
    # mean-centring: a DC offset does not change the features
    loud = ours > -10  # (bins with almost no energy sit at log(eps) and differ by float rounding only)
    assert torch.allclose(fbank(wav + 0.3, sr)[loud], ours[loud], atol=1e-3)


def test_normalisation_constants_and_formula():
    assert NORM_PRESETS["audioset"] == (-4.268, 4.569)
    assert NORM_PRESETS["esc50"] == (-6.627, 5.358)
    assert NORM_PRESETS["speechcommands"] == (-6.846, 5.565)
    assert NORM_PRESETS["birdset"] == (-7.2, 4.43)
    x = torch.randn(50, 128) * 3 - 5
    m, s = dataset_stats(x)
    assert m == pytest.approx(float(x.double().mean())) and s == pytest.approx(float(x.double().std()))
    y = normalize(x, m, s)
    assert float(y.mean()) == pytest.approx(0.0, abs=1e-5) and float(y.std()) == pytest.approx(0.5, rel=1e-4)
    assert torch.allclose(denormalize(y, m, s), x, atol=1e-4)
    assert dataset_stats([x[:20], x[20:]]) == pytest.approx((m, s))


def test_pad_or_crop():
    f = torch.randn(10, 4)
    assert pad_or_crop(f, 16).shape == (16, 4) and pad_or_crop(f, 16)[10:].abs().sum() == 0
    assert torch.equal(pad_or_crop(f, 6, start=2), f[2:8])


@pytest.mark.parametrize("fmt,ext,tol", [("WAV", "wav", 1e-4), ("FLAC", "flac", 1e-4), ("MP3", "mp3", None)])
def test_soundfile_reads_what_it_wrote(tmp_path, fmt, ext, tol):
    sr = 16000
    wav = _tone(440.0, sr, 0.5, 0.4).numpy() - 0.1
    stereo = np.stack([wav, wav], 1)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, stereo, sr, format=fmt)
    got, got_sr = read_audio(path)
    assert got_sr == sr and got.ndim == 1
    if tol is not None:
        assert len(got) == len(wav) and np.allclose(got.numpy(), wav, atol=tol)
    else:  # lossy: encoder delay / padding, but the same tone
        assert abs(len(got) - len(wav)) < 3000
        spec = np.abs(np.fft.rfft(got.numpy()))
        assert abs(np.argmax(spec) * sr / len(got) - 440.0) < 10


def _write(path, data, sr=16000, subtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, subtype=subtype)


def test_bad_files_are_counted_and_named(tmp_path, capsys):
    clear_cache()
    root = tmp_path / "audio"
    rng = np.random.default_rng(0)
    for cl in ("a", "b"):
        for i in range(4):
            _write(root / cl / f"{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32))
    _write(root / "a" / "resampled.wav", (0.1 * rng.standard_normal(4000)).astype(np.float32), sr=8000)
    _write(root / "a" / "silent.wav", np.zeros(8000, np.float32))
    _write(root / "a" / "short.wav", (0.1 * rng.standard_normal(100)).astype(np.float32))  # < one 25 ms frame
    _write(root / "b" / "nan.wav", np.full(8000, np.nan, np.float32), subtype="FLOAT")
    (root / "b" / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt not really")
    good = root / "b" / "good.wav"
    _write(good, (0.1 * rng.standard_normal(8000)).astype(np.float32))
    (root / "b" / "truncated.flac").write_bytes(good.read_bytes()[:40])
    (root / "b" / "empty.wav").write_bytes(b"")
    cfg = AudioFolderConfig(path=str(root), val_fraction=0.0, target_length=64)
    ds = AudioFolder(cfg, "train")
    err = capsys.readouterr().err
    assert len(ds) == 11 and ds.skipped == 5 and ds.num_classes == 2
    assert "skipped 5 bad file(s)" in err
    for name in ("short.wav", "nan.wav", "garbage.wav", "truncated.flac", "empty.wav"):
        assert name in err
    assert "resampling audio at 8000 Hz to 16000 Hz" in err and err.count("resampling") == 1
    assert "silent clip" in err and "silent.wav" in err
    assert torch.isfinite(ds.feats).all() and cfg.norm_mean is not None  # stats computed and stored in the config
    clear_cache()
    with pytest.raises(DataError, match=r"(short|nan|garbage|truncated|empty)"):
        AudioFolder(AudioFolderConfig(path=str(root), val_fraction=0.0, bad_files="error", target_length=64), "train")
    clear_cache()
    with pytest.raises(DataError, match="does not exist"):
        AudioFolder(AudioFolderConfig(path=str(tmp_path / "nope")), "train")


def test_csv_multilabel_with_split(tmp_path):
    clear_cache()
    rng = np.random.default_rng(1)
    rows = ["path,labels,split"]
    for i in range(8):
        _write(tmp_path / f"c{i}.flac", (0.1 * rng.standard_normal(6000)).astype(np.float32))
        labs = ["dog", "cat;dog", "bird", "cat"][i % 4]
        rows.append(f"c{i}.flac,{labs},{'test' if i >= 6 else 'train'}")
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    cfg = AudioFolderConfig(path=str(tmp_path / "meta.csv"), target_length=32)
    tr, te = AudioFolder(cfg, "train"), AudioFolder(cfg, "test")
    assert tr.multilabel and len(tr) == 6 and len(te) == 2
    assert tr.classes == ["bird", "cat", "dog"] and tr.labels.shape == (6, 3)
    assert tr.labels[1].tolist() == [0.0, 1.0, 1.0]
    assert tr[0]["x"].shape == (1, 32, 128) and "onehot" not in tr[0]
