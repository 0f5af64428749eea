"""HiCMAE: mask budgets, the frame-difference target by hand, the contrast at the taps, the loss sum, the decoder's
hierarchical skips, the talking-faces generator and the MP4 folder reader."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mae_audio.av_data import AVFolder, AVFolderConfig, TalkingFaces, TalkingFacesConfig
from mae_audio.methods.hicmae import HiCMAE, HiCMAEConfig
from mae_audio.talking import talking_faces
from mae_core.errors import ConfigError, DataError, MaeError
from mae_core.layers import TapCrossBlock
from mae_core.testing import single_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def tiny(**kw) -> HiCMAE:
    base = dict(num_frames=4, img_size=32, patch_size=8, target_length=32, num_mel_bins=32, audio_patch_size=8,
                embed_dim=16, depth=3, num_heads=2, fusion_depth=1, decoder_embed_dim=8, decoder_depth=4,
                decoder_num_heads=2, taps=[0, 1, 2])
    base.update(kw)
    torch.manual_seed(0)
    return HiCMAE(HiCMAEConfig(**base))


def batch(b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.randn(b, 3, 4, 32, 32, generator=g), "audio": torch.randn(b, 1, 32, 32, generator=g)}


def test_mask_counts_90_percent_tubes_80_percent_audio():
    m = tiny()
    mv, ma = m.make_masks(batch(), torch.Generator().manual_seed(0))
    t, h, w = m.video_grid  # (2, 4, 4): int(0.9 * 16) = 14 positions masked in every time slot
    assert mv.mask.shape == (4, t * h * w) and (mv.mask.sum(1) == t * 14).all()
    per_slot = mv.mask.reshape(4, t, h * w)
    assert torch.equal(per_slot[:, 0], per_slot[:, 1])  # the same spatial mask in every slot (tubes)
    la = m.audio_grid[0] * m.audio_grid[1]  # 16 patches: int(16 * 0.2) = 3 visible
    assert (ma.mask.sum(1) == la - 3).all() and not torch.equal(ma.mask[0], ma.mask[1])


def test_frame_difference_target_by_hand():
    m = tiny()
    v = batch(1)["video"]
    frames = v * m.v_std + m.v_mean  # back to [0, 1] units, as the reference's unnorm_videos
    got = m.video_target(v)[0]  # (L, 2 * 8 * 8 * 3), values ordered (frame, row, column, channel)
    p, k = 8, 0
    for ti in range(2):
        for hi in range(4):
            for wi in range(4):
                cube = frames[0, :, 2 * ti:2 * ti + 2, hi * p:(hi + 1) * p, wi * p:(wi + 1) * p]  # (3, 2, 8, 8)
                flat = cube.reshape(3, -1)
                norm = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-6)
                norm = norm.reshape(3, 2, p, p)
                want = torch.stack([norm[:, 0], norm[:, 1] - norm[:, 0]], 1)  # [f0, f1 - f0]
                assert torch.allclose(got[k], want.permute(1, 2, 3, 0).reshape(-1), atol=1e-5)
                k += 1
    plain = tiny(frame_diff=False).video_target(v)[0].reshape(-1, 2, 192)
    assert torch.allclose(got.reshape(-1, 2, 192)[:, 1], plain[:, 1] - plain[:, 0], atol=1e-5)


def hand_taps(m: HiCMAE, b: dict, mv, ma) -> dict:
    """Every encoder block run by hand on the visible tokens; tap i = the final norm of block i's output."""
    out = {}
    for name, enc, emb, pos, mask in (("video", m.video_encoder, m.video_embed, m.video_pos, mv),
                                      ("audio", m.audio_encoder, m.audio_embed, m.audio_pos, ma)):
        x = emb(b[name]) + pos
        x = torch.gather(x, 1, mask.ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        for i, blk in enumerate(enc.blocks):
            x = blk(x)
            out.setdefault(i, {})[name] = enc.norm(x)
    return out


def hand_info_nce(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    logits = F.normalize(v.mean(1), dim=-1) @ F.normalize(a.mean(1), dim=-1).T / 0.07
    y = torch.arange(len(v))
    return 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y))


@pytest.mark.parametrize("contrast,blocks", [("hierarchical", [0, 1, 2]), ("top", [2]), ("none", [])])
def test_contrast_at_the_taps_and_the_loss_sum(contrast, blocks):
    m = tiny(contrast=contrast).eval()
    b = batch()
    with torch.no_grad():
        out = m(b, generator=torch.Generator().manual_seed(3))
        mv, ma = m.make_masks(b, torch.Generator().manual_seed(3))
        taps = hand_taps(m, b, mv, ma)
    want = [hand_info_nce(taps[i]["video"], taps[i]["audio"]) for i in blocks]
    terms = out.extra["contrast_terms"]
    assert len(terms) == len(blocks)
    for t, w in zip(terms, want):
        assert torch.allclose(t, w, atol=1e-5)
    sel = out.mask.bool()
    mse_v = F.mse_loss(out.pred[sel], out.target[sel])  # the reference's nn.MSELoss on the masked tokens
    sel_a = out.extra["mask_audio"].bool()
    mse_a = F.mse_loss(out.extra["pred_audio"][sel_a], out.extra["target_audio"][sel_a])
    contrast_sum = sum(want) if want else torch.tensor(0.0)
    assert math.isclose(float(out.loss), float(mse_v + mse_a + 0.0025 * contrast_sum), rel_tol=1e-5)
    assert math.isclose(out.metrics["contrast"], float(contrast_sum), rel_tol=1e-5, abs_tol=1e-7)


def test_decoder_blocks_cross_attend_to_the_taps_deepest_first():
    m = tiny().eval()
    dec = m.decoder["video"]
    assert not isinstance(dec.blocks[0], TapCrossBlock) and all(isinstance(x, TapCrossBlock) for x in dec.blocks[1:])
    seen = {}
    hooks = [blk.register_forward_hook(lambda mod, args, out, i=i: seen.__setitem__(i, args[1][0]))
             for i, blk in enumerate(dec.blocks) if i]
    b = batch()
    with torch.no_grad():
        m(b, generator=torch.Generator().manual_seed(5))
        mv, ma = m.make_masks(b, torch.Generator().manual_seed(5))
        taps = hand_taps(m, b, mv, ma)
        pos = torch.gather(dec.pos.expand(4, -1, -1), 1, mv.ids_keep[..., None].expand(-1, -1, 8))
        for i in (1, 2, 3):  # decoder block i reads encoder tap [-i]: blocks 2, 1, 0
            assert torch.allclose(seen[i], dec.proj(taps[3 - i]["video"]) + pos, atol=1e-5)
    for h in hooks:
        h.remove()
    plain = tiny(decoder_skips=False, contrast="none")
    assert not any(isinstance(x, TapCrossBlock) for x in plain.decoder["video"].blocks)


def test_encode_pools_and_config_errors():
    m = tiny().eval()
    b = batch(2)
    with torch.no_grad():
        assert m.encode(b).shape == (2, 4 * 16) == (2, m.feature_dim())
        assert m.encode(b, "audio").shape == (2, 16) and m.encode({"video": b["video"]}, "video").shape == (2, 16)
    with pytest.raises(MaeError, match="pool"):
        m.encode(b, "cls")
    with pytest.raises(ConfigError, match="decoder_depth"):
        tiny(decoder_depth=2)
    with pytest.raises(ConfigError, match="taps"):
        tiny(taps=[0, 5])


def test_talking_faces_mouth_follows_the_voice_and_splits_hold_other_subjects():
    video, waves, labels, subj = talking_faces(8, "train", 16, 32, 1.28, 16000, (4, 2))
    assert video.shape == (8, 3, 16, 32, 32) and video.dtype == torch.uint8 and labels.tolist()[:4] == [0, 1, 2, 3]
    _, _, _, subj_test = talking_faces(4, "test", 16, 32, 1.28, 16000, (4, 2))
    assert set(subj.tolist()) <= {0, 1, 2, 3} and set(subj_test.tolist()) <= {4, 5}
    energy = torch.stack([torch.stack([c.pow(2).mean() for c in w.chunk(16)]) for w in waves])  # (8, 16)
    dark = (video[:, :, :, 20:30, 10:22].float().mean(1) < 60).float().mean((-1, -2))  # open mouth: dark pixels
    r = np.mean([np.corrcoef(energy[i], dark[i])[0, 1] for i in range(8)])
    assert r > 0.5


def _write_clip(path, seconds=0.6, fps=10, sr=16000, colour=(200, 30, 30)):
    import av

    with av.open(str(path), "w") as box:
        vs = box.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 48, 32, "yuv420p"
        as_ = box.add_stream("aac", rate=sr)
        for i in range(int(seconds * fps)):
            img = np.zeros((32, 48, 3), np.uint8)
            img[:] = colour
            for pk in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                box.mux(pk)
        for pk in vs.encode():
            box.mux(pk)
        t = np.arange(int(seconds * sr)) / sr
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                           format="flt", layout="mono")
        frame.sample_rate = sr
        for pk in as_.encode(frame):
            box.mux(pk)
        for pk in as_.encode():
            box.mux(pk)


def test_av_folder_reads_both_streams_with_pyav(tmp_path):
    for i in range(3):
        _write_clip(tmp_path / f"c{i}.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "labels.csv").write_text("path,label,split\nc0.mp4,happy,train\nc1.mp4,sad,train\n"
                                         "broken.mp4,sad,train\nc2.mp4,sad,test\n")
    cfg = AVFolderConfig(path=str(tmp_path), num_frames=4, image_size=16, target_length=48, num_mel_bins=32)
    ds = AVFolder(cfg, "train")
    assert len(ds) == 2 and ds.classes == ["happy", "sad"] and ds.labels.tolist() == [0, 1]
    s = ds[0]
    assert s["video"].shape == (3, 4, 16, 16) and s["audio"].shape == (1, 48, 32)
    red = ds.video[0, :, 0].float().mean((1, 2))
    assert red[0] > 150 and red[1] < 80  # the decoded colour survives
    assert AVFolder(cfg, "test").labels.tolist() == [1]
    with pytest.raises(DataError, match="broken.mp4"):
        AVFolder(AVFolderConfig(path=str(tmp_path), bad_files="error", num_frames=4, image_size=16,
                                target_length=48, num_mel_bins=32), "train")


def test_talking_faces_dataset_samples():
    cfg = TalkingFacesConfig(num_frames=4, image_size=32, target_length=48, num_mel_bins=32, num_train=4,
                             num_test=2, train_subjects=2, test_subjects=1)
    ds = TalkingFaces(cfg, "train")
    s = ds[1]
    assert s["video"].shape == (3, 4, 32, 32) and s["audio"].shape == (1, 48, 32) and int(s["label"]) == 1
    assert cfg.norm_mean is not None and abs(float(ds.audio.mean())) < 0.2
