"""FMAE-IAT parts: gradient reversal (identity forward, -lambda x the gradient backward, against autograd), the
adversary head's loss added to the task loss (BCE on the one-hot subject) and the encoder gradient it produces,
multi-label BCE and AU F1 on hand values, the face generator (AUs follow identity in training, unseen test subjects,
each AU a local deformation), the folder + CSV reader and the --adversary option end to end."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mae_core
from mae_core.cli import main
from mae_core.data.faces import AUS, FaceFolder, FaceFolderConfig, FacesConfig, SyntheticFaces, render_faces, subject_traits
from mae_core.data.utils import collate_dicts
from mae_core.eval.finetune import Classifier, load_classifier
from mae_core.eval.multilabel import best_threshold_f1, f1_per_label, mean_f1
from mae_core.layers import AdversaryHead, grad_reverse
from mae_core.testing import single_thread

TINY = dict(patch_size=4, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2)
DATA = dict(image_size=16, train_subjects=3, test_subjects=2, per_subject_train=4, per_subject_test=3)


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.mark.parametrize("lambd", [0.0, 0.5, 2.0])
def test_grad_reverse_identity_forward_and_flipped_scaled_gradient(lambd):
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64)
    y = grad_reverse(x, lambd)
    assert torch.equal(y, x)
    (torch.sin(y) * w).sum().backward()
    plain = torch.autograd.grad((torch.sin(x) * w).sum(), x)[0]  # autograd without the reversal
    assert torch.allclose(x.grad, -lambd * plain)
    assert torch.allclose(x.grad, -lambd * torch.cos(x.detach()) * w)  # and by hand


def test_adversary_head_trains_normally_but_reverses_into_its_input():
    torch.manual_seed(0)
    head = AdversaryHead(4, 3, lambd=1.5)
    x = torch.randn(6, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    F.cross_entropy(head(x), target).backward()
    x2 = x.detach().clone().requires_grad_(True)
    w = head.linear.weight.detach().clone().requires_grad_(True)
    F.cross_entropy(F.linear(x2, w, head.linear.bias.detach()), target).backward()
    assert torch.allclose(head.linear.weight.grad, w.grad)
    assert torch.allclose(x.grad, -1.5 * x2.grad)


def _classifier(lambd=1.0, adversary=True):
    ds = mae_core.create_dataset("faces", "train", **DATA)
    torch.manual_seed(0)
    backbone = mae_core.create_model("face-mae", dataset=ds, data_config=DATA, **TINY)
    clf = Classifier(backbone, len(AUS), multilabel=True, adversary_key="subject" if adversary else "",
                     adversary_classes=DATA["train_subjects"] if adversary else 0, adversary_lambda=lambd)
    with torch.no_grad():  # a head that is not ~0, so that the gradients below are far from zero
        torch.nn.init.normal_(clf.head.weight, std=0.5)
    return clf.eval(), collate_dicts([ds[i] for i in range(len(ds))])


def test_adversary_loss_is_added_and_the_encoder_gets_task_minus_lambda_adversary():
    lambd = 0.7
    clf, batch = _classifier(lambd)
    out = clf(batch)
    f = clf.encode(batch)
    y = batch["label"]
    p = torch.sigmoid(clf.head(f))
    task = -(y * p.log() + (1 - y) * (1 - p).log()).mean()  # multi-label BCE by hand
    q = torch.sigmoid(clf.adversary.linear(f))
    onehot = torch.zeros_like(q)
    onehot[torch.arange(len(q)), batch["subject"]] = 1
    adv = -(onehot * q.log() + (1 - onehot) * (1 - q).log()).mean()
    assert math.isclose(float(out.loss.detach()), float((task + adv).detach()), rel_tol=1e-5)
    assert math.isclose(float(out.metrics["loss_adversary"]), float(adv.detach()), rel_tol=1e-5)
    w = clf.backbone.patch_embed.proj.weight
    got = torch.autograd.grad(out.loss, w)[0]
    g_task = torch.autograd.grad(task, w, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, w)[0]
    assert g_adv.abs().max() > 1e-6
    assert torch.allclose(got, g_task - lambd * g_adv, atol=1e-7, rtol=1e-4)


def test_multilabel_f1_by_hand():
    probs = torch.tensor([[0.9, 0.2, 0.6], [0.4, 0.8, 0.1], [0.7, 0.3, 0.2], [0.1, 0.6, 0.3]])
    labels = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 0]])
    # AU0: tp 1 (row 0), fp 1 (row 2), fn 1 (row 1) -> 2/4; AU1: tp 2 -> 1; AU2: tp 1 -> 1
    assert torch.allclose(f1_per_label(probs, labels), torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64))
    assert math.isclose(mean_f1(probs, labels), 2.5 / 3)
    # a label never present nor predicted scores 0 (scikit-learn's zero_division=0)
    assert f1_per_label(torch.zeros(2, 1), torch.zeros(2, 1)).item() == 0.0
    # thresholds in (0.3, 0.4]: AU0 predicts rows 0, 1, 2 (F1 0.8), AU1 and AU2 are exact; no threshold does better
    best, at = best_threshold_f1(probs, labels)
    assert math.isclose(best, 2.8 / 3) and at == 0.31


def test_face_generator_identity_correlation_and_unseen_test_subjects():
    cfg = FacesConfig(image_size=16, train_subjects=6, test_subjects=3, per_subject_train=60, per_subject_test=60)
    tr, te = SyntheticFaces(cfg, "train"), SyntheticFaces(cfg, "test")
    s_tr, s_te = tr.columns["subject"], te.columns["subject"]
    assert set(s_tr.tolist()) == set(range(6)) and set(s_te.tolist()) == {6, 7, 8}
    freq_tr = torch.stack([tr.labels[s_tr == s].mean(0) for s in range(6)])
    freq_te = torch.stack([te.labels[s_te == s].mean(0) for s in range(6, 9)])
    # training subjects: rates 0.10 or 0.80 -> the subject's majority predicts each AU well
    assert (freq_tr - 0.45).abs().mean() > 0.25
    majority = (freq_tr[s_tr] > 0.5).float()
    assert (majority == tr.labels).float().mean() > 0.75
    # test subjects: every AU at 0.45 whoever the subject is
    assert (freq_te - 0.45).abs().mean() < 0.1


def test_each_action_unit_is_a_local_deformation_of_a_fixed_identity():
    traits = {k: v[1:2].expand(7, *v.shape[1:]) for k, v in subject_traits(3, 0).items()}
    aus = torch.zeros(7, len(AUS))
    aus[1:] = torch.eye(len(AUS))
    img = render_faces(traits, aus, 32)
    neutral, moved = img[0], img[1:]
    diff = (moved - neutral).abs().amax(1)  # (6, 32, 32)
    assert (diff.flatten(1).amax(1) > 0.1).all()  # every AU shows
    rows = torch.arange(32)
    upper = {"AU2", "AU4", "AU43"}
    for j, name in enumerate(AUS):
        changed = rows[(diff[j] > 0.05).any(1)]
        assert (changed < 16).all() if name in upper else (changed >= 12).all(), name
    other = render_faces({k: v[2:3] for k, v in subject_traits(3, 0).items()}, aus[:1], 32)[0]
    assert (other - neutral).abs().max() > 0.2  # another subject looks different


def test_face_folder_csv_reader(tmp_path):
    from PIL import Image
    lines = ["image,subject,AU12,AU26,split"]
    for i in range(6):
        Image.new("RGB", (20, 24), (10 * i, 100, 200)).save(tmp_path / f"f{i}.png")
        lines.append(f"f{i}.png,{'ab'[i % 2]}{i // 4},{i % 2},{int(i > 2)},{'test' if i >= 4 else 'train'}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    tr = FaceFolder(FaceFolderConfig(path=str(tmp_path), image_size=8), "train")
    te = FaceFolder(FaceFolderConfig(path=str(tmp_path), image_size=8), "test")
    assert tr.classes == ["AU12", "AU26"] and tr.images.shape == (4, 3, 8, 8)
    assert tr.labels.tolist() == [[0, 0], [1, 0], [0, 0], [1, 1]]
    assert tr.columns["subject"].tolist() == [0, 1, 0, 1] and te.columns["subject"].tolist() == [2, 3]
    (tmp_path / "labels.csv").write_text("image,who,AU1\nf0.png,a,1\n")
    with pytest.raises(mae_core.MaeError, match="no column 'subject'"):
        FaceFolder(FaceFolderConfig(path=str(tmp_path)), "train")


def test_finetune_adversary_end_to_end_and_reload(tmp_path, capsys):
    opts = dict(DATA, **TINY, epochs=1, batch_size=4)
    mae_core.pretrain("face-mae", out=str(tmp_path / "run"), **opts)
    summary = mae_core.finetune(str(tmp_path / "run"), out=str(tmp_path / "ft"), epochs=1, batch_size=4,
                                adversary_lambda=0.5)
    assert {"test_f1", "test_auc", "test_f1_best"} <= set(summary)
    clf = load_classifier(tmp_path / "ft")
    assert clf.multilabel and clf.adversary.lambd == 0.5 and clf.adversary.linear.out_features == 3
    bad = ["finetune", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "ft2"), "--adversary", "age",
           "--epochs", "1", "--batch-size", "4"]
    assert main(bad) == 2
    assert "--adversary age" in capsys.readouterr().err
