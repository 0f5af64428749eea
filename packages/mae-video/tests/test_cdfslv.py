"""CDFSL-V: the curriculum's values, the EMA teacher's update, the soft targets at T 0.1, the few-shot episodes
through the core evaluator, the stick-figure renderer and the MSR reader, the paired data."""
import io
import math
import tarfile

import numpy as np
import pytest
import torch

from mae_core.data.utils import collate_dicts
from mae_core.eval.fewshot import classify_episode, few_shot_eval, sample_episodes
from mae_video.data.crossdomain import CDFSLPaired, CDFSLPairedConfig, CDFSLPretrain, CDFSLPretrainConfig
from mae_video.data.stickfigures import BONES, read_msr, render
from mae_video.methods.cdfslv import (CDFSLV, CDFSLVConfig, curriculum_weights, distill_loss, soft_targets,
                                      target_fewshot)

TINY = dict(init="none", num_frames=4, img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2,
            decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2)
DATA = dict(num_frames=4, image_size=16, num_source=6, num_source_test=2, num_target=4, num_target_test=2,
            target_repeats=1)


def test_arctan_curriculum_hand_values():
    # w = 1/2 + arctan(10 (p - 0.5)) / pi: arctan(5) = 1.3734007669450159
    sup, dis = curriculum_weights(0.0)
    assert dis == pytest.approx(0.5 - 1.3734007669450159 / math.pi, abs=1e-12)  # 0.0628...
    assert sup == pytest.approx(1 - dis) and dis == pytest.approx(0.06283295818900114)
    assert curriculum_weights(0.5) == pytest.approx((0.5, 0.5))
    assert curriculum_weights(1.0) == pytest.approx((dis, sup))  # symmetric about the centre
    assert curriculum_weights(0.3, center=0.3, steepness=3) == pytest.approx((0.5, 0.5))
    ws = [curriculum_weights(p)[1] for p in np.linspace(0, 1, 11)]
    assert all(b > a for a, b in zip(ws, ws[1:]))  # weight moves steadily from CE to distillation
    assert curriculum_weights(0.7, "constant") == (1.0, 1.0)  # the released code's multiplier = 1
    assert curriculum_weights(0.7, "supervised") == (1.0, 0.0)
    assert curriculum_weights(0.7, "distill") == (0.0, 1.0)


def test_model_follows_progress_and_ema_update():
    torch.manual_seed(0)
    m = CDFSLV(CDFSLVConfig(**TINY))
    t0 = {k: v.clone() for k, v in m.teacher.module.state_dict().items()}
    with torch.no_grad():  # the student moves away from the teacher, as after optimizer steps
        for p in m.student_parts().parameters():
            p.add_(torch.randn_like(p))
    s = {k: v.clone() for k, v in m.student_parts().state_dict().items()}
    m.set_progress(0.25)
    assert m.weights() == pytest.approx(curriculum_weights(0.25))
    for k, v in m.teacher.module.state_dict().items():
        assert torch.allclose(v, 0.99 * t0[k] + 0.01 * s[k], atol=1e-6), k
    assert not any(p.requires_grad for p in m.teacher.parameters())
    assert all(p.requires_grad for p in m.head.parameters())


def test_soft_targets_temperature_and_loss_by_hand():
    q = soft_targets(torch.tensor([[1.0, 0.9, 0.0]]), 0.1)  # softmax([10, 9, 0])
    z = 1 + math.exp(-1) + math.exp(-10)
    assert torch.allclose(q, torch.tensor([[1 / z, math.exp(-1) / z, math.exp(-10) / z]]), atol=1e-6)
    s = torch.tensor([[2.0, 0.0, -1.0]])
    onehot = torch.tensor([[1.0, 0.0, 0.0]])
    ce = torch.nn.functional.cross_entropy(s, torch.tensor([0])).item()
    assert distill_loss(s, onehot).item() == pytest.approx(ce)


def test_forward_teacher_targets_from_weak_view_and_weights():
    torch.manual_seed(0)
    ds = CDFSLPaired(CDFSLPairedConfig(**DATA))
    batch = collate_dicts([ds[i] for i in range(4)])
    m = CDFSLV(CDFSLVConfig(**TINY))
    m.set_progress(0.0)
    out = m(batch, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expect = (m.logits(out.extra["weak"], teacher=True) / 0.1).softmax(-1)
        assert torch.allclose(out.target, expect, atol=1e-6)
        student = m.logits(out.extra["strong"])
    dis = distill_loss(student, expect)
    ce = torch.nn.functional.cross_entropy(m.logits(batch["video"]), batch["label"])
    w_sup, w_dis = curriculum_weights(0.0)
    assert out.loss.item() == pytest.approx(w_sup * ce.item() + w_dis * dis.item(), rel=1e-5)
    assert not torch.equal(out.extra["weak"], out.extra["strong"])  # two different views of the target clips
    out.loss.backward()
    assert m.head.weight.grad is not None and m.teacher.module["head"].weight.grad is None


def test_fewshot_goes_through_core_episodes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 12)
    feats = rng.normal(size=(72, 4)) + labels[:, None] * 0.8

    class Fixed(torch.utils.data.Dataset):
        def __len__(self):
            return 72

        def __getitem__(self, i):
            return {"x": torch.tensor(feats[i], dtype=torch.float32), "label": int(labels[i])}

    class Identity(torch.nn.Module):
        def encode(self, batch, pool=None):
            return batch["x"]

    res = target_fewshot(Identity(), Fixed(), way=5, shot=5, query=6, episodes=30, seed=3)
    eps = sample_episodes(labels, 5, 5, 6, 30, seed=3)
    accs = [100 * float((classify_episode(feats[e.support].astype(np.float32), e.support_labels,
                                          feats[e.query].astype(np.float32), "logistic") == e.query_labels).mean())
            for e in eps]
    assert res["accs"] == pytest.approx(accs)
    assert res["ci95"] == pytest.approx(1.96 * np.std(accs) / math.sqrt(30))
    assert res == few_shot_eval(feats, labels, 5, 5, 6, 30, 3, classifier="logistic")


def test_render_draws_bones_where_the_joints_are():
    pts = torch.zeros(1, 1, 20, 2)
    pts[..., 1] = torch.linspace(-0.8, 0.8, 20)  # every joint on the vertical centre line
    pts[0, 0, 19] = torch.tensor([0.0, -0.8])
    clip = render(pts, 32, torch.zeros(1, 3), torch.ones(1, 3), generator=torch.Generator().manual_seed(0))
    assert clip.shape == (1, 3, 1, 32, 32) and clip.dtype == torch.uint8
    frame = clip[0, 0, 0].float()
    assert frame[16, 15:17].mean() > 200  # on the line (centre columns 15, 16 straddle x = 0)
    assert frame[16, :8].mean() < 20 and frame[16, 24:].mean() < 20  # background away from it
    assert len(BONES) == 19


def test_msr_reader_split_and_faulty(tmp_path):
    path = tmp_path / "msr.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name in ("a01_s01_e01", "a02_s02_e01", "a13_s09_e03"):
            text = "\n".join("0.1 0.2 0.3 1.0" for _ in range(40)).encode()  # two frames
            info = tarfile.TarInfo(f"MSR/{name}_skeleton3D.txt")
            info.size = len(text)
            tf.addfile(info, io.BytesIO(text))
    rows = read_msr(path)
    assert [(a, s, stem) for a, s, stem, _ in rows] == [(0, 1, "a01_s01_e01"), (1, 2, "a02_s02_e01")]
    assert rows[0][3].shape == (2, 20, 3)


def test_paired_and_pretrain_data():
    c = dict(DATA)
    paired = CDFSLPaired(CDFSLPairedConfig(**c))
    assert len(paired) == 6 and set(paired[0]) == {"video", "label", "target_video", "index"}
    targets = [paired[i]["target_video"] for i in range(6)]
    assert torch.equal(targets[0], targets[4]) and not torch.equal(targets[0], targets[1])  # cycles over 4 clips
    both = CDFSLPretrain(CDFSLPretrainConfig(**c))
    assert len(both) == 6 + 4 and both[0]["domain"] == 0 and both[6]["domain"] == 1
    assert both[6]["label"] >= 8 and both[0]["label"] < 8
