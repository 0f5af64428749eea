"""benchmarks/gpu_suite.py cannot rot: its tiny CPU mode runs every row in a subprocess, as on the GPU machine."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"


# On the GPU machine the packages come from PYTHONPATH, not installed: no ``mae.domains`` entry points. The suite
# must register what it uses by importing it, so the test hides the entry points.
NO_ENTRY_POINTS = ("import runpy, sys, mae_core.registry as r; r.domain_entry_points = lambda: {}; "
                   "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def _run(*args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-c", NO_ENTRY_POINTS, str(SUITE), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _numbers(obj):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


def test_tiny_cpu_mode_runs_every_row(tmp_path):
    out = tmp_path / "suite.json"
    p = _run("--device", "cpu", "--tiny", "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert list(rows) == ["vit_mae", "mask_ratio", "bm_mae", "videomae", "grouping", "graphmae", "loader"]
    for name, row in rows.items():
        assert row["status"] in ("ok", "skipped"), (name, row)
        if row["status"] == "skipped":
            assert row["reason"], name
            continue
        nums = list(_numbers({k: v for k, v in row.items() if k not in ("seconds",)}))
        assert nums and all(math.isfinite(v) and v >= 0 for v in nums), (name, row)
        assert row["summary"] and name in p.stdout
    env = res["environment"]
    assert env["torch"] and env["device"] == "cpu" and env["tiny"] is True
    vit = rows["vit_mae"]
    if vit["status"] == "ok":
        # every timed variant has a positive step time and a throughput that matches it
        for k in ("ours", "hf", "ours_channels_last", "ours_compiled", "hf_compiled"):
            assert vit[k]["step_s"] > 0 and abs(vit[k]["img_per_s"] * vit[k]["step_s"] - vit["batch"]) < 1e-6
        assert vit["speedup_eager"] == vit["hf"]["step_s"] / vit["ours"]["step_s"]
        assert vit["flops_per_step"]["ours"] > 0 and vit["matmul_peak_tflops"] > 0
        assert sum(vit["profile"]["ours"]["sdpa_kernels"].values()) > 0  # an SDPA op was seen and named
    mr = rows["mask_ratio"]
    assert 0 < mr["flop_ratio"] < 1  # masking 75 % of the tokens cuts the FLOPs
    g = rows["grouping"]["sizes"]
    assert [(r["batch"], r["points"], r["groups"], r["group_size"]) for r in g] == [(2, 128, 8, 8), (2, 256, 16, 8)]
    assert rows["graphmae"]["status"] != "ok" or "SBM" in rows["graphmae"]["data"]
    assert rows["loader"]["status"] != "ok" or rows["loader"]["ratio"] == (
        rows["loader"]["loader_img_per_s"] / rows["loader"]["step_img_per_s"])


def test_bad_row_and_quoted_open3d_figure():
    p = _run("--rows", "vit_mae,nope", "--device", "cpu", "--tiny", timeout=60)
    assert p.returncode == 2 and "--rows" in p.stderr and "nope" in p.stderr
    # the Open3D figure the suite quotes is the one the 3-D benchmark page states
    text = (ROOT / "docs" / "benchmarks" / "3d.md").read_text()
    assert "| 33.0 ms (min 32.6) |" in text
