"""Nothing lost (issue 19): --overwrite keeps the old run until the new one stands, a run directory is locked while
a run uses it, and a resumed run's metric log equals an uninterrupted one."""
import json
import shutil

import pytest

from mae_core.cli import main
from mae_core.rundir import RunDir

TINY = ["--img-size", "16", "--image-size", "16", "--patch-size", "4", "--embed-dim", "32", "--depth", "1",
        "--num-heads", "2", "--decoder-embed-dim", "16", "--decoder-depth", "1", "--decoder-num-heads", "2",
        "--num-train", "64", "--num-test", "16", "--batch-size", "16", "--no-progress"]


def _files(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "v"
    assert main(["pretrain", "--out", str(run), "--epochs", "1", *TINY]) == 0
    return run


def test_overwrite_with_a_bad_flag_keeps_the_old_run(finished_run, tmp_path, capsys):
    run = tmp_path / "v"
    shutil.copytree(finished_run, run)
    before = _files(run)
    # the reported case: validation fails only when the trainer is built (64 samples, batch 1000)
    assert main(["pretrain", "--out", str(run), "--overwrite", "--epochs", "1", *TINY, "--batch-size", "1000"]) == 2
    assert "fewer than" in capsys.readouterr().err
    assert _files(run) == before
    assert main(["pretrain", "--out", str(run), "--overwrite", "--epochs", "1", *TINY, "--log-every", "abc"]) == 2
    assert _files(run) == before and not list(tmp_path.glob(".v.replaced-*"))


def test_overwrite_replaces_once_the_new_run_stands(finished_run, tmp_path):
    run = tmp_path / "v"
    shutil.copytree(finished_run, run)
    assert main(["pretrain", "--out", str(run), "--overwrite", "--max-steps", "2", *TINY]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    assert not list(tmp_path.glob(".v.replaced-*"))  # the replaced run is gone once the new one finished


def test_a_locked_run_directory_is_refused(finished_run, tmp_path, capsys):
    import os

    run = tmp_path / "v"
    shutil.copytree(finished_run, run)
    holder = RunDir(run, create=False).lock()  # another run holds it
    try:
        before = _files(run)
        for extra in (["--resume", "--epochs", "2"], ["--overwrite", "--epochs", "1"]):
            assert main(["pretrain", "--out", str(run), *extra, *TINY]) == 2
            err = capsys.readouterr().err.strip()
            assert f"another run (PID {os.getpid()})" in err and len(err.splitlines()) == 1
            assert _files(run) == before
    finally:
        holder.unlock()
    assert main(["pretrain", "--out", str(run), "--resume", "--epochs", "2", *TINY]) == 0  # free again


def test_resumed_metric_log_equals_an_uninterrupted_one(tmp_path):
    common = ["--epochs", "2", "--checkpoint-every", "2", "--keep-last", "5", "--log-every", "1", *TINY]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["pretrain", "--out", str(full), *common]) == 0
    assert main(["pretrain", "--out", str(cut), *common]) == 0
    # as if killed after step 7 was logged: the last checkpoints are lost, the log has every line
    for step in (8, 6):
        shutil.rmtree(cut / "checkpoints" / f"step-{step:08d}")
    assert main(["pretrain", "--out", str(cut), "--resume", *common]) == 0

    def steps_and_losses(run):
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in recs]

    resumed = steps_and_losses(cut)
    assert [s for s, _ in resumed] == list(range(1, 9))  # no step twice, none out of order
    assert resumed == steps_and_losses(full)  # exact resume: the same losses too


def test_truncate_metrics_keeps_lines_up_to_the_step(tmp_path):
    run = RunDir(tmp_path / "r")
    lines = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4)] + [{"step": 2, "epoch": 0, "val": 0.5}]
    run.metrics_path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    assert run.truncate_metrics(2) == 3
    assert [json.loads(x)["step"] for x in run.metrics_path.read_text().splitlines()] == [1, 2, 2]
