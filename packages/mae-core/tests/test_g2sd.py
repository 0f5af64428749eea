"""G2SD: the generic stage's target (the affine-free LayerNorm of the right teacher decoder block, found with hooks),
its smooth-L1 (beta 2) loss by hand, the teacher frozen and outside the checkpoint, and the specific stage: the core's
hard distillation with a distillation token ((CE on labels + CE on the teacher's argmax) / 2, by hand) and the default
T-FT teacher trained once, then cached, without changing the student's fine-tuning."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import mae_core
from mae_core.data.utils import collate_dicts
from mae_core.errors import ConfigError, MaeError
from mae_core.eval.finetune import Classifier, load_classifier
from mae_core.masking import gather_tokens
from mae_core.teacher import FrozenTeacher
from mae_core.testing import single_thread

SMALL = dict(patch_size=4, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=2,
             decoder_num_heads=2, teacher="random", teacher_embed_dim=24, teacher_depth=3, teacher_num_heads=2,
             teacher_decoder_embed_dim=20, teacher_decoder_depth=3, teacher_decoder_num_heads=2)
DATA = dict(image_size=16, num_train=6, num_test=2)


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def build(**over):
    ds = mae_core.create_dataset("shapes", "train", **DATA)
    torch.manual_seed(0)
    model = mae_core.create_model("g2sd", dataset=ds, data_config=DATA, **{**SMALL, **over})
    return model, collate_dicts([ds[i] for i in range(6)])


def capture(module, store, key):
    return module.register_forward_hook(lambda m, i, o: store.setdefault(key, []).append((i[0], o)))


@pytest.mark.parametrize("block,used", [(2, 1), (4, 2)])  # block 4 of a 3-block decoder: its last block (index 2)
def test_target_is_the_affine_free_layernorm_of_the_teachers_decoder_block(block, used):
    model, batch = build(teacher_decoder_block=block)
    t = model.teacher
    seen: dict = {}
    hooks = [capture(b, seen, i) for i, b in enumerate(t.model.decoder.blocks)]
    hooks.append(capture(t.encoder.blocks[0], seen, "enc0"))
    tokens, _ = model.tokenize(batch)
    mask = model.make_mask(batch, tokens, torch.Generator().manual_seed(1))
    target = model.teacher_target(batch, mask)
    for h in hooks:
        h.remove()
    assert sorted(k for k in seen if k != "enc0") == list(range(used + 1))  # later decoder blocks never run
    assert seen["enc0"][0][0].shape == (6, 1 + 4, 24)  # the teacher encodes cls + the student's 4 visible patches
    h = seen[used][0][1]  # raw output of that decoder block: cls + all 16 tokens (visible and masked)
    assert h.shape == target.shape == (6, 1 + 16, 20)
    expected = (h - h.mean(-1, keepdim=True)) / (h.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(target, expected, atol=1e-5)
    assert model.target_blocks() == used + 1
    # the teacher's decoder input is its own encoder's output on the student's visible set, in the student's mask
    x = t.model.embed_tokens(gather_tokens(t.model.tokenize(batch)[0], mask.ids_keep))
    pos = gather_tokens(t.model.pos_embed.expand(6, -1, -1), mask.ids_keep)
    latent = t.encoder(x, pos)
    assert torch.allclose(seen[0][0][0], t.model.decoder.hidden(latent, mask.ids_restore, blocks=0), atol=1e-6)


def test_loss_is_smooth_l1_beta_2_of_the_student_decoder_through_the_mlp():
    model, batch = build(teacher_decoder_block=2)
    with torch.no_grad():
        model.feature_head.fc2.weight.mul_(8.0)  # errors on both sides of beta
    seen: dict = {}
    hooks = [capture(model.decoder.blocks[-1], seen, "last"), capture(model.feature_head, seen, "head")]
    out = model(batch, generator=torch.Generator().manual_seed(4))
    for h in hooks:
        h.remove()
    decoded = seen["last"][0][1]
    assert torch.equal(seen["head"][0][0], decoded)  # the head reads the last decoder block's raw output
    tokens, _ = model.tokenize(batch)
    mask = model.make_mask(batch, tokens, torch.Generator().manual_seed(4))
    assert torch.equal(out.mask, mask.mask)  # teacher and student share this mask
    d = model.feature_head(decoded) - model.teacher_target(batch, mask)
    assert d.shape == (6, 17, 20) and bool((d.abs() > 2).any()) and bool((d.abs() < 2).any())
    a = d.abs()
    hand = torch.where(a < 2.0, 0.5 * a**2 / 2.0, a - 0.5 * 2.0).mean()
    assert torch.allclose(out.loss, hand, atol=1e-6)
    assert torch.allclose(out.metrics["loss_decoder_feature"], hand, atol=1e-6)
    assert out.metrics["teacher_decoder_blocks"] == 2
    assert not any(k.startswith(("decoder.norm", "decoder.pred")) for k in model.state_dict())  # no pixel head


def test_teacher_is_frozen_and_outside_the_checkpoint(tmp_path):
    teacher_dir = mae_core.create_model("image-mae", adapt=False, img_size=16, patch_size=4, embed_dim=24, depth=3,
                                        num_heads=2, decoder_embed_dim=12, decoder_depth=2,
                                        decoder_num_heads=2).save_pretrained(tmp_path / "teacher")
    model, batch = build(teacher=str(teacher_dir), teacher_embed_dim=8, teacher_depth=1, teacher_decoder_depth=1)
    c = model.config
    fields = (c.teacher_embed_dim, c.teacher_depth, c.teacher_decoder_embed_dim, c.teacher_decoder_depth)
    assert fields == (24, 3, 12, 2)  # read from the teacher
    assert c.teacher_sha256 == mae_core.teacher.file_sha256(teacher_dir / "model.safetensors")
    model(batch, generator=torch.Generator().manual_seed(0)).loss.backward()
    t = model.teacher
    assert not any(p.requires_grad or p.grad is not None for p in t.model.parameters())
    assert model.feature_head.fc1.weight.grad is not None
    assert not any("teacher" in k for k in model.state_dict())
    assert not {id(p) for p in t.model.parameters()} & {id(p) for p in model.parameters()}
    model.save_pretrained(tmp_path / "student")
    (teacher_dir / "model.safetensors").unlink()  # the student reloads and encodes without its teacher
    back = mae_core.from_pretrained(tmp_path / "student").eval()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(back.encode(batch), model.encode(batch), atol=1e-6)
    with pytest.raises(MaeError, match="teacher"):
        back.train()(batch, generator=torch.Generator().manual_seed(0))


def _tiny_backbone(seed):
    torch.manual_seed(seed)
    return mae_core.create_model("image-mae", adapt=False, img_size=16, patch_size=4, embed_dim=16, depth=2,
                                 num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2)


def test_specific_stage_loss_by_hand():
    ds = mae_core.create_dataset("shapes", "train", **DATA)
    batch = collate_dicts([ds[i] for i in range(6)])
    teacher_clf = Classifier(_tiny_backbone(1), 8)
    with torch.no_grad():
        teacher_clf.head.weight.normal_()  # a teacher with opinions (its head starts near zero)
    teacher = FrozenTeacher(teacher_clf, encoder=teacher_clf.backbone.encoder)
    clf = Classifier(_tiny_backbone(2), 8, label_smoothing=0.1, distill_token=True, teacher=teacher).train()
    with torch.no_grad():
        clf.head.weight.normal_()
    out = clf(batch)
    b, y = clf.backbone, batch["label"]
    tokens, pos = b.tokenize(batch)
    x = torch.cat([b.embed_tokens(tokens) + pos, clf.dist_token.expand(6, -1, -1)], 1)  # no position: DeiT's token
    feats = b.encoder(x)
    assert feats.shape == (6, 1 + 16 + 1, 16)
    cls_logits = clf.head(clf.fc_norm(feats[:, 1:-1].mean(1)))
    dist_logits = clf.head_dist(feats[:, -1])
    with torch.no_grad():
        t_arg = teacher_clf.head(teacher_clf.fc_norm(teacher_clf.backbone.encode(batch))).argmax(-1)
    assert bool((t_arg != y).any())  # the two terms have different targets here

    def ce(logits, target, smooth=0.0):
        logp = logits.log_softmax(-1)
        return ((1 - smooth) * -logp.gather(1, target[:, None])[:, 0] - smooth * logp.mean(-1)).mean()

    hand = (ce(cls_logits, y, 0.1) + ce(dist_logits, t_arg)) / 2
    assert torch.allclose(out.loss, hand, atol=1e-6)
    assert torch.allclose(out.metrics["loss_teacher"], ce(dist_logits, t_arg), atol=1e-6)
    clf.eval()
    with torch.no_grad():
        assert torch.allclose(clf.logits(batch), (cls_logits + dist_logits) / 2, atol=1e-5)  # both heads at test
    out.loss.backward()
    assert clf.dist_token.grad is not None and not any(p.grad is not None for p in teacher_clf.parameters())
    assert not any(k.startswith("teacher") for k in clf.state_dict())
    with pytest.raises(MaeError, match="distillation token"):
        Classifier(_tiny_backbone(0), 8, teacher=teacher)


def test_finetune_trains_the_default_t_ft_once_then_caches_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAE_TEACHER_CACHE", str(tmp_path / "cache"))
    data = dict(image_size=16, num_train=32, num_test=8, batch_size=8, patch_size=4, progress=False)
    teacher = mae_core.pretrain("image-mae", out=str(tmp_path / "tmim"), epochs=1, embed_dim=24, depth=2, num_heads=2,
                                decoder_embed_dim=12, decoder_depth=2, decoder_num_heads=2, **data)
    student = mae_core.pretrain("g2sd", out=str(tmp_path / "g2sd"), epochs=1, embed_dim=16, depth=2, num_heads=2,
                                decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2, teacher=str(teacher.path),
                                **data)
    assert student.model.config.teacher_decoder_depth == 2
    capsys.readouterr()
    ft = dict(epochs=2, batch_size=8, label_fraction=0.5)
    first = mae_core.finetune(student, out=str(tmp_path / "ft1"), **ft)
    assert "training the default T-FT" in capsys.readouterr().out
    second = mae_core.finetune(student, out=str(tmp_path / "ft2"), **ft)
    assert "teacher: cached T-FT" in capsys.readouterr().out
    rec = json.loads((tmp_path / "ft1" / "config.json").read_text())["run_config"]["finetune"]
    t_ft = rec["distill_teacher"]
    assert t_ft.startswith(str(tmp_path / "cache" / "t-ft-shapes-")) and len(rec["distill_teacher_sha256"]) == 64
    assert first["test_acc"] == second["test_acc"]  # the cached teacher gives the same fine-tuning
    a, b = load_classifier(tmp_path / "ft1"), load_classifier(tmp_path / "ft2")
    assert a.dist_token is not None and torch.equal(a.dist_token, b.dist_token)
    assert load_classifier(t_ft).dist_token is None  # T-FT itself is fine-tuned without distillation
    off = mae_core.finetune(student, out=str(tmp_path / "ft3"), distill_teacher="none", **ft)
    assert load_classifier(tmp_path / "ft3").dist_token is None and "test_acc" in off
    with pytest.raises(ConfigError, match="no fine-tuning teacher"):
        mae_core.finetune(teacher, out=str(tmp_path / "ft4"), distill_teacher="default", **ft)
