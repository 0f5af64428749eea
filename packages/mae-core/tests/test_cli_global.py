"""Global options of every ``mae-<domain>`` command line (--quiet, --verbose, --version), the help of every command
for every method and dataset, unreadable --config files, and file-system failures (disk full, read-only output)
as one-line errors."""
from __future__ import annotations

import errno
import re

import pytest
import torch

from mae_core import MaeError, registry
from mae_core.checkpoint import check_writable, list_checkpoints, save_checkpoint
from mae_core.cli import main, run_cli
from mae_core.cli.commands import CORE_COMMANDS

TINY = ["--img-size", "16", "--image-size", "16", "--patch-size", "4", "--embed-dim", "32", "--depth", "1",
        "--num-heads", "2", "--decoder-embed-dim", "16", "--decoder-depth", "1", "--decoder-num-heads", "2",
        "--num-train", "32", "--num-test", "16", "--batch-size", "16", "--epochs", "2"]


def test_version_names_the_packages(capsys):
    import mae_core

    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        out = capsys.readouterr().out.strip()
        assert out == re.sub(r"\s+", " ", out) and out.startswith(f"mae-core {mae_core.__version__} (")
        assert f"torch {torch.__version__}" in out
    assert main(["info", "--version"]) == 0  # anywhere on the line
    assert capsys.readouterr().out.startswith("mae-core ")


def test_global_options_in_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "-q, --quiet" in out and "-v, --verbose" in out and "-V, --version" in out
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "global options: -q/--quiet" in capsys.readouterr().out


def test_quiet_silences_progress_and_notes_but_not_errors(tmp_path, capsys, monkeypatch):
    # the progress bar and notes write to stderr, unless --quiet
    import sys

    from mae_core import registry as reg

    real = reg.build_model

    def noisy(*a, **k):
        print("note: a note from the model", file=sys.stderr)
        return real(*a, **k)
    monkeypatch.setattr(reg, "build_model", noisy)
    assert main(["pretrain", "--out", str(tmp_path / "loud"), *TINY, "--epochs", "1"]) == 0
    loud = capsys.readouterr()
    assert "note: a note from the model" in loud.err and "train:" in loud.err
    assert main(["pretrain", "--out", str(tmp_path / "quiet"), *TINY, "--epochs", "1", "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and "run directory:" in quiet.out
    # an error still shows under --quiet
    assert main(["pretrain", "-q", "--out", str(tmp_path / "q2"), "--num-train", "0"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: ")
    assert not (tmp_path / "q2").exists()


def test_verbose_adds_the_traceback_and_quiet_verbose_conflict(capsys):
    assert main(["pretrain", "--num-train", "0", "--out", "never"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["pretrain", "--num-train", "0", "--out", "never", "--verbose"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback (most recent call last)" in err
    assert main(["info", "-q", "-v"]) == 2
    assert "--quiet and --verbose" in capsys.readouterr().err


DOMAINS = ["core", "medical", "3d", "video", "graph", "audio", "text"]


@pytest.mark.parametrize("domain", DOMAINS)
def test_help_renders_for_every_command_method_and_dataset(domain, capsys):
    """Every command x every method x every dataset: --help prints (argparse %-formatting included) and exits 0."""
    registry.autoload(domain)
    cmds = list(dict.fromkeys([*CORE_COMMANDS, *(c.name for c in registry.commands(domain))]))
    methods, datasets = registry.methods(domain), registry.datasets(domain)
    assert methods and datasets
    for cmd in cmds:
        for m in methods:
            for ds in datasets:
                with pytest.raises(SystemExit) as e:
                    run_cli(domain, [cmd, "--method", m.name, "--dataset", ds.name, "--help"])
                assert e.value.code == 0, (cmd, m.name, ds.name)
                out = capsys.readouterr()
                assert out.out.startswith("usage:") and out.err == "", (cmd, m.name, ds.name)


def test_help_keeps_percent_signs(capsys):
    registry.autoload("medical")
    with pytest.raises(SystemExit):
        run_cli("medical", ["pretrain", "--dataset", "brain-folder", "--help"])
    assert "20 %" in capsys.readouterr().out


@pytest.mark.parametrize("kind,message", [("binary", "is not a text (UTF-8) file"), ("folder", "is a folder"),
                                          ("list", "expected a mapping at the top level"),
                                          ("missing", "no such file or folder (--config)")])
def test_bad_config_file(kind, message, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "folder":
        path.mkdir()
    elif kind == "list":
        path.write_text("- 1\n- 2\n")
    assert main(["pretrain", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(path) in err
    assert not (tmp_path / "run").exists()


def _enospc(*args, **kw):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_saving_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ckpts = tmp_path / "checkpoints"
    first = save_checkpoint(ckpts / "step-00000001", model, state={"step": 1})
    monkeypatch.setattr("mae_core.checkpoint.save_file", _enospc)
    with pytest.raises(MaeError) as e:
        save_checkpoint(ckpts / "step-00000002", model, state={"step": 2})
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and f"last good checkpoint {first} is kept" in msg
    assert list_checkpoints(ckpts) == [first] and sorted(p.name for p in ckpts.iterdir()) == ["step-00000001"]


def test_disk_full_as_safetensors_reports_it(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def full(*a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')
    monkeypatch.setattr("mae_core.checkpoint.save_file", full)
    with pytest.raises(MaeError, match="No space left on device.*no checkpoint was written yet"):
        save_checkpoint(tmp_path / "c" / "step-00000001", torch.nn.Linear(2, 2))
    assert list((tmp_path / "c").iterdir()) == []


def test_disk_full_mid_run_is_one_line_and_resumable(tmp_path, monkeypatch, capsys):
    """Pretraining whose second checkpoint hits a full disk: exit 2, one line, the first checkpoint kept, and
    --resume finishes the run once there is space."""
    import mae_core.checkpoint as ck

    real, calls = ck.save_file, {"n": 0}

    def fills_up(tensors, path, *a, **k):
        if path.endswith("model.safetensors") and ".step-00000004." in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *a, **k)
    monkeypatch.setattr(ck, "save_file", fills_up)
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), *TINY, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "step-00000002 is kept" in err
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-00000002"]
    monkeypatch.setattr(ck, "save_file", real)
    assert main(["pretrain", "--out", str(run), *TINY, "--no-progress", "--resume"]) == 0
    assert (run / "model.safetensors").exists()


def test_read_only_output_is_refused_before_work(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MaeError, match="is not a folder"):
        check_writable(blocker / "out.nii.gz")
    with pytest.raises(MaeError, match="is a folder"):
        check_writable(tmp_path)

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr("mae_core.checkpoint.tempfile.mkstemp", denied)
    with pytest.raises(MaeError, match="cannot write the output: Permission denied"):
        check_writable(tmp_path / "new" / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_python_warnings_print_as_one_line():
    """A library warning raised under a command is one ``warning: ...`` line (not file, line number and source);
    run in a fresh interpreter, as a user's shell sees it (pytest records warnings itself)."""
    import subprocess
    import sys

    code = ("import warnings\n"
            "from mae_core.cli import commands, main\n"
            "def warns(domain, argv):\n"
            "    warnings.warn('something odd\\n  in two lines', UserWarning)\n"
            "    return 0\n"
            "commands.CORE_COMMANDS['info'] = (warns, 'list')\n"
            "raise SystemExit(main(['info']))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stderr == "warning: something odd in two lines\n", p.stderr
