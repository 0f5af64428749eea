"""The distillation methods (DMAE, MaskAlign) and their shared part: hand-computed loss terms, the partial teacher
run, attention-guided masking against the exact without-replacement law, the teacher kept frozen and outside the
student's weights, and the cached default teacher."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import mae_core
from mae_core.data.utils import collate_dicts
from mae_core.distill.common import attention_masking, teacher_blocks
from mae_core.errors import MaeError
from mae_core.masking import gather_tokens, random_masking
from mae_core.testing import single_thread

SMALL = dict(patch_size=4, embed_dim=32, depth=3, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
             decoder_num_heads=2, teacher="random", teacher_embed_dim=24, teacher_depth=4, teacher_num_heads=2)
DATA = dict(image_size=16, num_train=6, num_test=2)


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def build(method, **over):
    ds = mae_core.create_dataset("shapes", "train", **DATA)
    torch.manual_seed(0)
    model = mae_core.create_model(method, dataset=ds, data_config=DATA, **{**SMALL, **over})
    return model, collate_dicts([ds[i] for i in range(6)])


def hand_mask(model, batch, seed):
    tokens, _ = model.tokenize(batch)
    return model.make_mask(batch, tokens, torch.Generator().manual_seed(seed))


# ---- DMAE ------------------------------------------------------------------------------------------------------------
def test_dmae_term_is_l1_of_normalised_features_at_the_chosen_blocks():
    model, batch = build("dmae", student_block=1, teacher_block=2)
    model.train()
    out = model(batch, generator=torch.Generator().manual_seed(3))
    mask = hand_mask(model, batch, 3)
    tokens, pos = model.tokenize(batch)
    ids = mask.ids_keep
    x = model.embed_tokens(gather_tokens(tokens, ids))
    _, hidden = model.encoder(x, gather_tokens(pos.expand(len(ids), -1, -1), ids), return_hidden=True)
    student = model.distill_head(hidden[1])  # block 1 of the student, before the final norm
    t = model.teacher  # the full teacher run, every block, on the same visible tokens (+ cls)
    t_tokens, t_pos = t.model.tokenize(batch)
    full = t(t.model.embed_tokens(gather_tokens(t_tokens, ids)), pos=gather_tokens(t_pos.expand(len(ids), -1, -1), ids),
             layers=[2]).features[0]
    assert full.shape == (6, 1 + 4, 24)  # cls + 4 visible of 16 patches
    a, b = student / student.norm(dim=-1, keepdim=True), full / full.norm(dim=-1, keepdim=True)
    expected = (a - b).abs().mean()
    assert torch.allclose(out.metrics["loss_align_s1_t2"], expected, atol=1e-6)
    # pixel loss on raw patches (no per-patch normalisation), masked patches only, weight 1 for the feature term
    pix = ((out.pred - model.target(batch)) ** 2).mean(-1)
    pix = (pix * mask.mask).sum() / mask.mask.sum()
    assert torch.allclose(out.metrics["loss_pixel"], pix, atol=1e-6)
    assert torch.allclose(out.loss, pix + expected, atol=1e-6)
    assert out.metrics["teacher_blocks"] == 3 and out.metrics["teacher_block_fraction"] == 0.75


def test_the_teacher_runs_only_up_to_the_matched_block():
    model, batch = build("dmae", teacher_block=1)
    calls = []
    for i, blk in enumerate(model.teacher.encoder.blocks):
        blk.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    model(batch, generator=torch.Generator().manual_seed(0))
    assert calls == [0, 1]  # blocks 2 and 3 of the 4-block teacher never run
    ids = hand_mask(model, batch, 0).ids_keep
    calls.clear()
    part = teacher_blocks(model.teacher, batch, ids, 1)
    t_tokens, t_pos = model.teacher.model.tokenize(batch)
    full = model.teacher(model.teacher.model.embed_tokens(gather_tokens(t_tokens, ids)),
                         pos=gather_tokens(t_pos.expand(len(ids), -1, -1), ids), layers=[1]).features[0]
    assert torch.allclose(part, full, atol=1e-6) and calls == [0, 1, 0, 1, 2, 3]


def test_dmae_rejects_blocks_out_of_range():
    with pytest.raises(mae_core.ConfigError, match="teacher_block: 4 is out of range for a 4-block teacher"):
        build("dmae", teacher_block=4)


# ---- MaskAlign -------------------------------------------------------------------------------------------------------
def exact_inclusion(w: list[float], k: int) -> list[float]:
    """P(token i among the first k of a draw without replacement with probabilities proportional to w)."""
    p = [0.0] * len(w)
    for seq in itertools.permutations(range(len(w)), k):
        prob, left = 1.0, 1.0
        for j in seq:
            prob *= w[j] / left
            left -= w[j]
        for j in seq:
            p[j] += prob
    return p


def test_attention_masking_follows_the_attention_distribution():
    w = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    n = 40000
    info = attention_masking(w.expand(n, -1), 0.5, torch.Generator().manual_seed(0))  # keep int(6 * 0.5) = 3
    assert info.ids_keep.shape == (n, 3) and bool((info.mask.sum(1) == 3).all())
    freq = (1 - info.mask).mean(0)
    exact = torch.tensor(exact_inclusion(w.tolist(), 3))
    assert (freq - exact).abs().max() < 0.01, (freq, exact)  # 4 standard errors at n = 40000 is about 0.01
    ref = torch.multinomial(w.expand(n, -1), 6, replacement=False, generator=torch.Generator().manual_seed(1))
    ref_freq = torch.zeros(6).scatter_add_(0, ref[:, :3].flatten(), torch.ones(3 * n)) / n  # the reference's draw
    assert (freq - ref_freq).abs().max() < 0.015
    # the order of the kept tokens follows the draw: the first kept is token i with probability w_i
    first = torch.bincount(info.ids_keep[:, 0], minlength=6).float() / n
    assert (first - w).abs().max() < 0.01


def test_maskalign_draws_its_visible_set_from_the_teachers_cls_attention():
    model, batch = build("maskalign", num_targets=2)
    out = model(batch, generator=torch.Generator().manual_seed(5))
    t = model.teacher(batch, attention=[-1])
    expected = attention_masking(t.cls_attention[0].mean(1), 0.7, torch.Generator().manual_seed(5))
    assert torch.equal(out.mask, expected.mask)
    model.config.attention_masking = False  # uniform: the MAE random mask of the same generator
    out2 = model(batch, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out2.mask, random_masking(6, 16, 0.7, torch.Generator().manual_seed(5)).mask)


@pytest.mark.parametrize("dynamic", [True, False])
def test_maskalign_loss_by_hand(dynamic):
    model, batch = build("maskalign", dynamic_alignment=dynamic, drop_path=0.0)
    assert model.num_targets == 3 and model.target_blocks() == [1, 2, 3]  # min(5, student 3, teacher 4)
    if dynamic:
        assert torch.equal(model.align.detach(), torch.eye(3) + 0.01)
        with torch.no_grad():
            model.align.add_(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)) * 0.1)
    out = model(batch, generator=torch.Generator().manual_seed(2))
    ids = (1 - out.mask).nonzero()[:, 1].view(6, -1)  # visible positions, in index order
    tokens, pos = model.tokenize(batch)
    t = model.teacher(batch, layers=[1, 2, 3])  # intact image
    keep = [torch.where(row == 0)[0] for row in out.mask]
    order = []  # the student's token order: its mask's ids_keep, recovered from the same generator
    t_att = model.teacher(batch, attention=[-1]).cls_attention[0].mean(1)
    info = attention_masking(t_att, 0.7, torch.Generator().manual_seed(2))
    assert torch.equal(info.ids_keep.sort(1).values, ids) and len(keep[0]) == 4
    order = info.ids_keep
    x = model.embed_tokens(gather_tokens(tokens, order))
    _, hidden = model.encoder(x, gather_tokens(pos.expand(6, -1, -1), order), return_hidden=True)
    h = torch.stack(hidden)
    if dynamic:
        h = torch.stack([sum(model.align[a, b] * h[b] for b in range(3)) for a in range(3)])
    total = 0.0
    for k, block in enumerate([1, 2, 3]):
        y = t.features[k]
        y = (y - y.mean(-1, keepdim=True)) / (y.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        y = torch.cat([y[:, :1], gather_tokens(y[:, 1:], order)], 1)
        term = F.smooth_l1_loss(model.distill_heads[k](h[k]), y, beta=1.0)
        assert torch.allclose(out.metrics[f"loss_t{block}"], term, atol=1e-5)
        total = total + 2 * term / 3
    assert torch.allclose(out.loss, total, atol=1e-5)


# ---- the teacher: frozen, outside the weights, cached by default -----------------------------------------------------
@pytest.mark.parametrize("method", ["dmae", "maskalign"])
def test_teacher_is_frozen_and_outside_the_checkpoint(method, tmp_path):
    teacher_dir = mae_core.create_model("image-mae", adapt=False, img_size=16, patch_size=4, embed_dim=24, depth=4,
                                        num_heads=2, decoder_embed_dim=16, decoder_depth=1,
                                        decoder_num_heads=2).save_pretrained(tmp_path / "teacher")
    model, batch = build(method, teacher=str(teacher_dir), teacher_embed_dim=8, teacher_depth=1)
    assert (model.config.teacher_embed_dim, model.config.teacher_depth) == (24, 4)  # read from the teacher
    assert model.config.teacher_sha256 == mae_core.teacher.file_sha256(teacher_dir / "model.safetensors")
    model(batch, generator=torch.Generator().manual_seed(0)).loss.backward()
    t = model.teacher
    assert not any(p.requires_grad or p.grad is not None for p in t.model.parameters())
    assert not any("teacher" in k for k in model.state_dict())
    n_teacher = sum(p.numel() for p in t.model.parameters())
    assert not {id(p) for p in t.model.parameters()} & {id(p) for p in model.parameters()} and n_teacher > 0
    model.save_pretrained(tmp_path / "student")
    (teacher_dir / "model.safetensors").unlink()  # the student reloads and encodes without its teacher
    back = mae_core.from_pretrained(tmp_path / "student").eval()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(back.encode(batch), model.encode(batch), atol=1e-6)
    with pytest.raises(MaeError, match="teacher"):
        back.train()(batch, generator=torch.Generator().manual_seed(0))


def test_default_teacher_is_trained_once_then_cached_without_touching_the_student_init(tmp_path, monkeypatch,
                                                                                       capsys):
    monkeypatch.setenv("MAE_TEACHER_CACHE", str(tmp_path / "cache"))
    ds = mae_core.create_dataset("shapes", "train", image_size=16, num_train=8, num_test=2)
    over = {k: v for k, v in SMALL.items() if not k.startswith("teacher")}
    data = dict(image_size=16, num_train=8, num_test=2)
    torch.manual_seed(0)
    first = mae_core.create_model("dmae", dataset=ds, data_config=data, teacher_epochs=1, **over)
    assert "training the default T-MIM" in capsys.readouterr().out
    torch.manual_seed(0)
    second = mae_core.create_model("dmae", dataset=ds, data_config=data, teacher_epochs=1, **over)
    assert "teacher: cached T-MIM" in capsys.readouterr().out
    assert first.config.teacher == second.config.teacher and first.config.teacher.startswith(str(tmp_path))
    assert (first.config.teacher_embed_dim, first.config.teacher_depth) == (192, 6)
    assert first.config.teacher_sha256 == second.config.teacher_sha256
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_missing_teacher_is_a_one_line_error(tmp_path, capsys):
    from mae_core.cli import main

    assert main(["pretrain", "--method", "dmae", "--teacher", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope: teacher checkpoint not found (--teacher)" in err[0]


@pytest.mark.slow  # about 40 s: five tiny pretrain + probe runs in subprocesses
def test_benchmark_script_runs_and_tabulates(tmp_path, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "core_distillation.py"
    tiny = {"image_size": 16, "num_train": 16, "num_test": 8, "batch_size": 8, "patch_size": 4, "embed_dim": 32,
            "depth": 3, "num_heads": 2, "decoder_embed_dim": 16, "decoder_num_heads": 2, "probe_epochs": 2}
    env = {**__import__("os").environ, "MAE_TEACHER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    for runs, extra in ((["mae"], {}), (["dmae-95", "maskalign-no-da"], {"teacher": "random", "teacher_embed_dim": 32,
                                                                          "teacher_depth": 4, "teacher_num_heads": 2})):
        subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--epochs", "1", "--runs", *runs,
                        "--set", __import__("json").dumps({**tiny, **extra})], check=True, env=env,
                       capture_output=True)
    text = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--table"], check=True,
                          capture_output=True, text=True).stdout
    assert "| mae | 0 | 2 |" in text and "| dmae-95 | 0 | 2 |" in text and "| maskalign-no-da | 0 | 2 |" in text


def test_cli_pretrain_probe_and_reconstruct_of_maskalign(tmp_path, capsys):
    from mae_core.cli import main

    run = tmp_path / "run"
    flags = ["--image-size", "16", "--num-train", "16", "--num-test", "8", "--batch-size", "8", "--epochs", "1",
             "--patch-size", "4", "--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--teacher", "random",
             "--teacher-embed-dim", "32", "--teacher-depth", "2", "--teacher-num-heads", "2", "--no-progress"]
    assert main(["pretrain", "--method", "maskalign", "--out", str(run), *flags]) == 0
    saved = __import__("json").loads((run / "config.json").read_text())["config"]
    assert saved["teacher"] == "random" and saved["mask_ratio"] == 0.7 and saved["dynamic_alignment"] is True
    assert "loss_t1" in (run / "metrics.jsonl").read_text()  # each target block's term is logged
    assert main(["probe", "--run", str(run), "--probe-epochs", "2", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["reconstruct", "--run", str(run), "--out", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no reconstruction picture" in err[0]
