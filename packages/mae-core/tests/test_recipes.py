"""The fine-tuning and linear-probe recipes: fine-tuning starts from its own optimiser defaults (the reference
main_finetune.py), and ``--recipe mae`` trains the linear probe as main_linprobe.py (LARS, lr 0.1 x batch / 256)."""
import math

import pytest
import torch

from mae_core.cli import main
from mae_core.eval.linear import RECIPES, linear_probe
from mae_core.registry import get_method
from mae_core.runconfig import FINETUNE_TRAIN_DEFAULTS, resolve_run_config
from mae_core.train.optim import LARS


def test_lars_step_matches_a_hand_computed_update():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([w, b], lr=2.0, weight_decay=0.0, momentum=0.9, trust_coefficient=0.001)
    w.grad = torch.tensor([[0.6, 0.8]])  # ||g|| = 1: the step is scaled by 0.001 x 5 / 1
    b.grad = torch.tensor([0.5])  # 1-d: plain momentum step
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([[3.0 - 2 * 0.003, 4.0 - 2 * 0.004]]))
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 2 * 0.5]))
    w0 = w.detach().clone()
    w.grad = torch.tensor([[0.6, 0.8]])
    b.grad = torch.tensor([0.5])
    opt.step()  # momentum: mu = 0.9 mu + new scaled step
    scale = 0.001 * float(w0.norm()) / 1.0
    mu = 0.9 * torch.tensor([[0.003, 0.004]]) + scale * torch.tensor([[0.6, 0.8]])
    assert torch.allclose(w.detach(), w0 - 2 * mu, atol=1e-7)
    assert torch.allclose(b.detach(), torch.tensor([0.0 - 2 * (0.9 * 0.5 + 0.5)]))


def test_lars_weight_decay_enters_the_trust_ratio():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    opt = LARS([w], lr=1.0, weight_decay=0.1, momentum=0.0, trust_coefficient=0.01)
    w.grad = torch.zeros(1, 2)
    opt.step()  # d = 0.1 w, ||d|| = 0.5, ratio 0.01 x 5 / 0.5 = 0.1: w -= 0.01 w
    assert torch.allclose(w.detach(), torch.tensor([[3.0 * 0.99, 4.0 * 0.99]]))


def test_mae_probe_recipe_is_main_linprobe():
    # optimiser, epochs, blr (x batch / 256), warm-up epochs, weight decay of the reference protocol
    assert RECIPES["mae"] == ("lars", 90, 0.1, 10, 0.0)
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(512, 8, generator=g), torch.randn(256, 8, generator=g)
    y, yt = (x[:, 0] + x[:, 1] > 0).long(), (xt[:, 0] + xt[:, 1] > 0).long()
    # LARS steps are relative (lr x 0.001 of the weight norm): the reference's lr 6.4 (batch 16384) moves the head;
    # at the batch-scaled lr of a small batch (0.0125 at 32) a few hundred steps barely move it
    assert linear_probe(x, y, xt, yt, recipe="mae", epochs=30, lr=5.0, batch_size=32)["acc"] > 0.95
    assert linear_probe(x, y, xt, yt, recipe="mae", epochs=30, batch_size=32)["acc"] < 0.6
    with pytest.raises(ValueError, match="recipe"):
        linear_probe(x, y, xt, yt, recipe="sgd")


def test_mae_probe_recipe_from_the_cli(tmp_path, capsys):
    out = tmp_path / "r"
    tiny = ["--dataset", "shapes", "--image-size", "16", "--num-train", "32", "--num-test", "16", "--patch-size",
            "4", "--embed-dim", "16", "--depth", "1", "--num-heads", "2", "--decoder-embed-dim", "8",
            "--decoder-depth", "1", "--decoder-num-heads", "2", "--batch-size", "16"]
    assert main(["pretrain", "--out", str(out), "--epochs", "1", "--no-progress", *tiny]) == 0
    capsys.readouterr()
    assert main(["probe", "--run", str(out), "--probe", "linear", "--recipe", "mae", "--probe-epochs", "3"]) == 0
    assert "linear" in capsys.readouterr().out
    assert main(["probe", "--run", str(out), "--recipe", "lars"]) == 2


def test_finetune_starts_from_its_own_optimiser_defaults():
    pre = resolve_run_config("image-mae")
    ft = resolve_run_config("image-mae", base="finetune", overrides={"epochs": 100})
    assert pre.train.betas == (0.9, 0.95)  # pretraining: MAE's betas
    assert ft.train.betas == (0.9, 0.999) == FINETUNE_TRAIN_DEFAULTS["betas"]  # fine-tuning: AdamW's defaults
    assert (ft.train.min_lr, ft.train.warmup_epochs) == (1e-6, 5.0)
    assert FINETUNE_TRAIN_DEFAULTS["base_lr"] == 1e-3  # main_finetune.py's blr
    assert ft.train.base_lr == get_method("image-mae").finetune_defaults["base_lr"] == 1.5e-3  # measured better
    # a method without its own fine-tuning lr takes the reference's
    sim = resolve_run_config("image-simclr", base="finetune")
    assert (sim.train.base_lr, sim.train.betas) == (1e-3, (0.9, 0.999))


def test_finetune_warmup_is_capped_at_a_tenth_of_the_epochs_unless_given():
    assert resolve_run_config("image-mae", base="finetune", overrides={"epochs": 20}).train.warmup_epochs == 2.0
    given = resolve_run_config("image-mae", base="finetune", overrides={"epochs": 20, "warmup_epochs": 7})
    assert given.train.warmup_epochs == 7
    ft = resolve_run_config("image-mae", base="finetune", overrides={"betas": [0.8, 0.9], "base_lr": 3e-4})
    assert (ft.train.betas, ft.train.base_lr) == ((0.8, 0.9), 3e-4)
    assert math.isclose(ft.train.warmup_epochs, 0.1 * get_method("image-mae").train_defaults["epochs"])


def test_method_finetune_defaults_and_config_file_win(tmp_path, monkeypatch):
    spec = get_method("image-mae")
    monkeypatch.setattr(spec, "finetune_defaults", {"base_lr": 5e-4, "warmup_epochs": 1.0})
    ft = resolve_run_config("image-mae", base="finetune")
    assert (ft.train.base_lr, ft.train.warmup_epochs, ft.train.betas) == (5e-4, 1.0, (0.9, 0.999))
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("train:\n  base_lr: 0.002\n")
    assert resolve_run_config("image-mae", base="finetune", config=str(cfg)).train.base_lr == 0.002


def test_finetune_help_shows_the_fine_tuning_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "AdamW betas (default: (0.9, 0.999))" in text
    assert "(default: 0.0015)" in text and "(default: 1e-06)" in text  # image-mae's fine-tuning lr, min lr


def test_method_finetune_options_and_data_are_defaults_that_flags_override(monkeypatch, capsys):
    from mae_core.workflows import FinetuneConfig, finetune_config

    spec = get_method("image-mae")
    monkeypatch.setattr(spec, "finetune_options", {"layer_decay": 0.6, "pool": "cls"})
    monkeypatch.setattr(spec, "finetune_data", {"num_train": 8, "augment": "finetune"})  # shapes has no augment
    fc = finetune_config(spec, {})
    assert (fc.layer_decay, fc.pool, fc.drop_path_rate) == (0.6, "cls", FinetuneConfig().drop_path_rate)
    assert finetune_config(spec, {"layer_decay": 0.9}).layer_decay == 0.9
    ft = resolve_run_config("image-mae", base="finetune")
    assert ft.data.num_train == 8 and not hasattr(ft.data, "augment")
    assert resolve_run_config("image-mae", base="finetune", overrides={"num_train": 16}).data.num_train == 16
    assert resolve_run_config("image-mae").data.num_train != 8  # pretraining is untouched
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "layer-wise lr decay (1 = none) (default: 0.6)" in text
