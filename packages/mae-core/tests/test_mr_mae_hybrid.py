"""MR-MAE and Hybrid Distillation: each loss term recomputed by hand (the mimic term over the visible tokens of the
encoder output, or over the masked tokens of the decoder; the per-head KL between attention maps; the feature term),
the token dropping keeping the top-attention tokens, both teachers frozen and outside the student's weights, and the
default contrastive teacher trained once, then cached."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mae_core
from mae_core.data.utils import collate_dicts
from mae_core.distill.common import head_groups
from mae_core.distill.hybrid import drop_tokens
from mae_core.masking import gather_tokens
from mae_core.testing import single_thread

SMALL = dict(patch_size=4, embed_dim=32, depth=3, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
             decoder_num_heads=2, teacher="random", teacher_embed_dim=24, teacher_depth=4, teacher_num_heads=4,
             cl_teacher="random", cl_teacher_embed_dim=20, cl_teacher_depth=2, cl_teacher_num_heads=2)
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


def ln(y):  # LayerNorm without affine, by hand
    return (y - y.mean(-1, keepdim=True)) / (y.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()


def encoder_run(model, batch, ids, **kw):
    """The student's own encoder (the core path) over cls + the patch tokens ``ids``."""
    tokens, pos = model.tokenize(batch)
    x = model.embed_tokens(gather_tokens(tokens, ids))
    return model.encoder(x, gather_tokens(pos.expand(len(ids), -1, -1), ids), **kw)


# ---- MR-MAE ----------------------------------------------------------------------------------------------------------
def test_mr_mae_mimics_only_the_visible_tokens_of_the_encoder_output():
    model, batch = build("mr-mae")
    out = model(batch, generator=torch.Generator().manual_seed(3))
    tokens, _ = model.tokenize(batch)
    mask = model.make_mask(batch, tokens, torch.Generator().manual_seed(3))
    latent = encoder_run(model, batch, mask.ids_keep)  # after the final norm
    assert latent.shape == (6, 1 + 4, 32)  # cls + 25 % of 16 patches
    total = 0.0
    for k, (field, head) in enumerate(zip(["cl_teacher", "teacher"], model.mimic_heads)):
        t = model.frozen_teacher(field)(batch).last  # the intact image, every token
        target = gather_tokens(ln(t[:, 1:]), mask.ids_keep)  # the visible positions only, no cls
        term = ((head(latent[:, 1:]) - target) ** 2).mean()
        name = ["loss_mimic_cl", "loss_mimic_mim"][k]
        assert torch.allclose(out.metrics[name], term, atol=1e-5), name
        total = total + term
    pred = model.decoder(latent, mask.ids_restore)
    target = model.target(batch)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    pix = ((pred - target) ** 2).mean(-1)
    pix = (pix * mask.mask).sum() / mask.mask.sum()
    assert torch.allclose(out.metrics["loss_pixel"], pix, atol=1e-5)
    assert torch.allclose(out.loss, pix + total, atol=1e-5)
    assert [h.out_features for h in model.mimic_heads] == [20, 24]


def test_mr_mae_decoder_ablation_predicts_the_features_of_the_masked_tokens():
    model, batch = build("mr-mae", mimic_on="decoder", mimic_cl=False)
    assert not hasattr(model, "mimic_heads") and model.decoder.pred.out_features == 48 + 24
    out = model(batch, generator=torch.Generator().manual_seed(1))
    assert set(out.metrics) == {"loss_pixel", "loss_mimic_mim"} and out.pred.shape == (6, 16, 48)
    tokens, _ = model.tokenize(batch)
    mask = model.make_mask(batch, tokens, torch.Generator().manual_seed(1))
    full = model.decoder(encoder_run(model, batch, mask.ids_keep), mask.ids_restore)
    target = ln(model.teacher(batch).last[:, 1:])
    per_token = ((full[..., 48:] - target) ** 2).mean(-1)
    term = (per_token * mask.mask).sum() / mask.mask.sum()  # the 12 masked tokens of each image only
    assert torch.allclose(out.metrics["loss_mimic_mim"], term, atol=1e-5)
    assert torch.equal(out.pred, full[..., :48])


def test_mr_mae_needs_a_teacher_to_mimic():
    with pytest.raises(mae_core.ConfigError, match="at least one teacher"):
        build("mr-mae", mimic_cl=False, mimic_mim=False)


# ---- Hybrid Distillation ---------------------------------------------------------------------------------------------
def test_head_groups_pair_heads_by_position():
    expected = torch.tensor([[.5, .5, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, .5, .5, 0], [0, 0, 0, 0, 0, 1]])
    assert torch.equal(head_groups(4, 6), expected)
    assert torch.equal(head_groups(3, 3), torch.eye(3))
    assert torch.equal(head_groups(4, 2), torch.tensor([[1., 0], [1, 0], [0, 1], [0, 1]]))


def test_drop_tokens_keeps_the_top_attention_tokens():
    importance = torch.tensor([[0.1, 0.5, 0.05, 0.2, 0.15], [0.3, 0.1, 0.2, 0.25, 0.15]])
    ids = torch.tensor([[0, 2, 3, 4], [1, 2, 3, 4]])  # the tokens still held (grid positions)
    x = torch.arange(2 * 5 * 1.0).view(2, 5, 1)  # cls + 4 held tokens, values are their slot numbers
    x2, ids2 = drop_tokens(x, ids, importance, keep=2)
    assert ids2.tolist() == [[3, 4], [3, 2]]  # among the held: 0.2 > 0.15 > 0.1 > 0.05; 0.25 > 0.2 > 0.15 > 0.1
    assert x2[:, :, 0].tolist() == [[0, 3, 4], [5, 8, 7]]  # cls first, then the kept tokens' own features


def test_hybrid_relation_term_is_the_per_head_kl_of_restricted_attention_maps():
    model, batch = build("hybrid-distill", relation_blocks=[0, 1], drop_blocks=[], drop_keep=[], feature_weight=0.0)
    assert model.teacher_of == {0: 0, 1: 1}  # (i + 1) * 4 // 3 - 1
    out = model(batch, generator=torch.Generator().manual_seed(4))
    assert "loss_feat" not in out.metrics
    tokens, _ = model.tokenize(batch)
    ids = model.make_mask(batch, tokens, torch.Generator().manual_seed(4)).ids_keep  # 8 of 16 held (mask 0.5)
    _, student = encoder_run(model, batch, ids, attn_blocks=[0, 1])  # the encoder's own attention maps
    t = model.teacher(batch, attention=[0, 1]).attentions  # intact image: (6, 4 heads, 17, 17)
    terms = []
    for s_map, t_map, name in zip(student, t, ["loss_rel_s0_t0", "loss_rel_s1_t1"]):
        per_head = []
        for h in range(2):  # student head h <- mean of teacher heads 2h, 2h + 1
            kl = 0.0
            for b in range(6):
                idx = [0] + [int(i) + 1 for i in ids[b]]
                sub = t_map[b][:, idx][:, :, idx]
                sub = sub / sub.sum(-1, keepdim=True)
                p = (sub[2 * h] + sub[2 * h + 1]) / 2
                q = s_map[b, h]
                kl = kl + (p * (p / q).log()).sum(-1).mean()
            per_head.append(kl / 6)
        term = sum(per_head) / 2
        assert torch.allclose(out.metrics[name], term, atol=1e-5), name
        terms.append(term)
    assert torch.allclose(out.loss, (terms[0] + terms[1]) / 2, atol=1e-5)


def test_hybrid_feature_term_and_token_dropping_by_teacher_attention():
    model, batch = build("hybrid-distill", relation_weight=0.0, drop_blocks=[1], drop_keep=[0.5])
    out = model(batch, generator=torch.Generator().manual_seed(2))
    tokens, _ = model.tokenize(batch)
    ids = model.make_mask(batch, tokens, torch.Generator().manual_seed(2)).ids_keep  # 8 held at the input
    t = model.frozen_teacher("cl_teacher")(batch, attention=[-1])
    score = t.cls_attention[0].mean(1)  # (6, 16): the contrastive teacher's last-block cls attention
    held = [sorted(row.tolist(), key=lambda i: -float(score[b, i]))[:4] for b, row in enumerate(ids)]
    assert out.metrics["tokens_held"] == 4
    for b in range(6):  # the 4 highest-attention tokens of the 8 held survive the drop before block 1
        assert sorted(torch.where(out.mask[b] == 0)[0].tolist()) == sorted(held[b])
    # the feature term, with the student's blocks run by hand around the drop
    enc = model.encoder
    x = encoder_run(model, batch, ids, return_hidden=True)[1][0]  # block 0's output, cls + 8
    x = torch.cat([x[:, :1], torch.stack([x[b, 1:][[ids[b].tolist().index(i) for i in held[b]]]
                                          for b in range(6)])], 1)
    x = enc.norm(enc.blocks[2](enc.blocks[1](x)))
    target = ln(t.last)
    target = torch.stack([target[b, [0] + [i + 1 for i in held[b]]] for b in range(6)])
    feat = F.smooth_l1_loss(model.feature_head(x), target, beta=1.0)
    assert torch.allclose(out.metrics["loss_feat"], feat, atol=1e-5) and torch.allclose(out.loss, feat, atol=1e-5)


def test_hybrid_rejects_a_config_with_nothing_to_distill():
    with pytest.raises(mae_core.ConfigError, match="both are 0"):
        build("hybrid-distill", relation_weight=0.0, feature_weight=0.0)


# ---- both teachers: frozen, outside the weights; the default T-CL cached ---------------------------------------------
@pytest.mark.parametrize("method", ["mr-mae", "hybrid-distill"])
def test_both_teachers_are_frozen_and_outside_the_checkpoint(method, tmp_path):
    mim = mae_core.create_model("image-mae", adapt=False, img_size=16, patch_size=4, embed_dim=24, depth=4,
                                num_heads=4, decoder_embed_dim=16, decoder_depth=1,
                                decoder_num_heads=2).save_pretrained(tmp_path / "mim")
    cl = mae_core.create_model("image-simclr", adapt=False, img_size=16, patch_size=4, embed_dim=16, depth=2,
                               num_heads=2, proj_hidden_dim=16, proj_dim=8).save_pretrained(tmp_path / "cl")
    model, batch = build(method, teacher=str(mim), cl_teacher=str(cl), teacher_depth=1, cl_teacher_embed_dim=8)
    c = model.config
    assert (c.teacher_embed_dim, c.teacher_depth, c.cl_teacher_embed_dim, c.cl_teacher_depth) == (24, 4, 16, 2)
    assert c.cl_teacher_sha256 == mae_core.teacher.file_sha256(cl / "model.safetensors")
    model(batch, generator=torch.Generator().manual_seed(0)).loss.backward()
    teachers = [model.teacher, model.frozen_teacher("cl_teacher")]
    assert type(teachers[1].model).__name__ == "ContrastiveViT"
    student = {id(p) for p in model.parameters()}
    for t in teachers:
        assert not any(p.requires_grad or p.grad is not None for p in t.model.parameters())
        assert not {id(p) for p in t.model.parameters()} & student
    assert not any("teacher" in k for k in model.state_dict())
    model.save_pretrained(tmp_path / "student")
    for d in (mim, cl):
        (d / "model.safetensors").unlink()  # the student reloads and encodes without its teachers
    back = mae_core.from_pretrained(tmp_path / "student").eval()
    with torch.no_grad():
        assert torch.allclose(back.encode(batch), model.eval().encode(batch), atol=1e-6)


def test_default_contrastive_teacher_is_trained_once_then_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAE_TEACHER_CACHE", str(tmp_path / "cache"))
    data = dict(image_size=16, num_train=8, num_test=2)
    ds = mae_core.create_dataset("shapes", "train", **data)
    over = {**{k: v for k, v in SMALL.items() if not k.startswith("cl_teacher")}, "cl_teacher_epochs": 1}
    torch.manual_seed(0)
    first = mae_core.create_model("mr-mae", dataset=ds, data_config=data, **over)
    assert "training the default T-CL (image-simclr" in capsys.readouterr().out
    torch.manual_seed(0)
    second = mae_core.create_model("mr-mae", dataset=ds, data_config=data, **over)
    assert "teacher: cached T-CL" in capsys.readouterr().out
    assert first.config.cl_teacher == second.config.cl_teacher and "t-cl-shapes-" in first.config.cl_teacher
    assert (first.config.cl_teacher_embed_dim, first.config.cl_teacher_depth) == (128, 4)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_cli_pretrain_of_hybrid_takes_list_flags_and_has_no_picture(tmp_path, capsys):
    from mae_core.cli import main

    flags = ["--image-size", "16", "--num-train", "16", "--num-test", "8", "--batch-size", "8", "--epochs", "1",
             "--patch-size", "4", "--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--teacher", "random",
             "--teacher-embed-dim", "24", "--teacher-depth", "3", "--teacher-num-heads", "3", "--cl-teacher",
             "random", "--cl-teacher-embed-dim", "16", "--cl-teacher-depth", "1", "--cl-teacher-num-heads", "2",
             "--no-progress"]
    run = tmp_path / "hybrid"
    assert main(["pretrain", "--method", "hybrid-distill", "--out", str(run), *flags, "--drop-blocks", "1",
                 "--relation-blocks", "0", "1"]) == 0
    saved = __import__("json").loads((run / "config.json").read_text())["config"]
    assert saved["drop_blocks"] == [1] and saved["relation_blocks"] == [0, 1] and saved["cl_teacher"] == "random"
    logged = (run / "metrics.jsonl").read_text()
    assert all(k in logged for k in ("loss_rel_s0_t0", "loss_rel_s1_t2", "loss_feat"))
    capsys.readouterr()
    assert main(["reconstruct", "--run", str(run), "--out", str(tmp_path / "r.png")]) == 2
    assert "has no reconstruction picture" in capsys.readouterr().err
