import json
import subprocess
import sys

import pytest

from mae_core.cli import main

TINY = ["--img-size", "16", "--image-size", "16", "--patch-size", "4", "--embed-dim", "32", "--depth", "2",
        "--num-heads", "2", "--decoder-embed-dim", "16", "--decoder-depth", "1", "--decoder-num-heads", "2",
        "--num-train", "64", "--num-test", "32", "--batch-size", "16", "--epochs", "2", "--no-progress"]


def test_cli_pretrain_probe_finetune_reconstruct(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), *TINY]) == 0
    for name in ("config.yaml", "metrics.jsonl", "model.safetensors", "config.json", "summary.json",
                 "pictures/reconstruction.png"):
        assert (run / name).exists(), name
    assert list((run / "checkpoints").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8
    assert main(["probe", "--run", str(run), "--probe-epochs", "5", "--no-progress"]) == 0
    probe = json.loads((run / "summary.json").read_text())["probe"]
    assert 0.0 <= probe["linear"]["acc"] <= 1.0 and "knn" in probe
    ft = tmp_path / "ft"
    assert main(["finetune", "--run", str(run), "--out", str(ft), "--epochs", "1", "--batch-size", "16",
                 "--no-progress"]) == 0
    assert "test_acc" in json.loads((ft / "summary.json").read_text())
    from mae_core.checkpoint import from_pretrained
    assert from_pretrained(ft) is not None and (ft / "head.safetensors").exists()  # the fine-tuned run reloads
    assert main(["reconstruct", "--run", str(run), "--num", "2", "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").exists()
    # fewshot is a core command of every domain; the classifier is a choice
    assert main(["fewshot", "--run", str(run), "--way", "3", "--shot", "2", "--query", "3", "--folds", "2",
                 "--classifier", "cosine", "--no-progress"]) == 0
    res = json.loads((run / "summary.json").read_text())["fewshot_3way_2shot_cosine"]
    assert res["folds"] == 2 and 0.0 <= res["acc"] <= 100.0


def test_cli_config_file_and_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  embed_dim: 32\n  depth: 1\n  num_heads: 2\n  decoder_embed_dim: 16\n"
                   "  decoder_depth: 1\n  decoder_num_heads: 2\ntrain:\n  epochs: 5\n")
    run = tmp_path / "run"
    args = ["pretrain", "--config", str(cfg), "--out", str(run), "--epochs", "1", "--max-steps", "2",
            "--num-train", "32", "--num-test", "8", "--image-size", "16", "--batch-size", "16", "--no-progress"]
    assert main(args) == 0
    import yaml
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 1  # the flag beats the file
    assert resolved["model"]["depth"] == 1  # the file beats the default
    assert resolved["model"]["img_size"] == 16  # the model follows the data


@pytest.mark.parametrize("args,needle", [
    (["pretrain", "--epochs", "many"], "expected an integer"),
    (["pretrain", "--method", "nope"], "unknown method 'nope'"),
    (["pretrain", "--bogus-flag", "1"], "unrecognized arguments"),
    (["pretrain", "--epoch", "3"], "(did you mean: --epoch -> --epochs?)"),
    (["frobnicate"], "unknown command"),
])
def test_cli_user_errors_are_one_line(args, needle, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "x")] if args[0] == "pretrain" else args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_help_explains_options():
    out = subprocess.run([sys.executable, "-m", "mae_core.cli", "pretrain", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "--mask-ratio" in out.stdout and "fraction of patches hidden" in out.stdout
    assert "--base-lr" in out.stdout


@pytest.mark.parametrize("command,own", [("probe", "--probe-epochs"), ("fewshot", "--shot"), ("reconstruct", "--num")])
def test_evaluation_help_lists_its_own_options_not_training_ones(command, own, capsys):
    """An evaluation command's --help shows its own flags with their defaults and the data flags, not the training /
    model flags it accepts (they come from the run's config); --device stays."""
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert own in out and "--device" in out and "--image-size" in out
    for training_only in ("--checkpoint-every", "--compile", "--base-lr", "--mask-ratio", "--embed-dim"):
        assert training_only not in out, training_only
    assert "(default: None)" not in out and "(default: False)" not in out
    if command == "probe":
        entry = " ".join(out.split("\n  --probe-epochs", 1)[1].split("--probe-lr")[0].split())
        assert "(default: 100; 90 with --recipe mae)" in entry, entry
    pre = subprocess.run([sys.executable, "-m", "mae_core.cli", "pretrain", "--help"], capture_output=True, text=True)
    assert "--checkpoint-every" in pre.stdout and "--mask-ratio" in pre.stdout  # pretrain lists them


def test_cli_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "image-mae" in out and "shapes" in out and "vit-s16" in out


def test_the_default_method_does_not_depend_on_import_order():
    """A method module imported before the domain's entry module (as a test or a user script may do) registers
    first; the domain's default is still the method marked ``default``."""
    code = ("import mae_core.distill.hybrid, mae_core.distill.g2sd\n"
            "from mae_core import registry\n"
            "from mae_core.runconfig import _default_method\n"
            "assert registry.methods('core')[0].name != 'image-mae', 'the import order no longer tests anything'\n"
            "print(_default_method('core'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "image-mae"
