"""Every package builds into a wheel that installs and imports in a fresh virtual environment.

The fresh environment gets the heavy third-party dependencies (torch, MONAI, Open3D, ...) from the workspace's
environment through a .pth file, so the test checks what the wheels themselves carry: all modules, the console
script, and that importing the package registers its methods.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mae-core": ("mae_core.image", "core"), "mae-medical": ("mae_medical", "medical"),
            "mae-3d": ("mae_3d", "3d"), "mae-video": ("mae_video", "video"), "mae-graph": ("mae_graph", "graph"),
            "mae-audio": ("mae_audio", "audio"), "mae-text": ("mae_text", "text")}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on PATH (the README's commands need it)")
    out = tmp_path_factory.mktemp("wheels")
    for name in PACKAGES:
        r = subprocess.run([uv, "build", "--package", name, "--wheel", "--out-dir", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_wheels_install_and_import(wheels, tmp_path):
    found = sorted(p.name for p in wheels.glob("*.whl"))
    assert len(found) == len(PACKAGES), found
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # third-party dependencies come from the workspace environment, but not our own packages
    deps = sysconfig.get_paths()["purelib"]
    (site / "workspace_deps.pth").write_text(deps + "\n")
    r = subprocess.run([shutil.which("uv"), "pip", "install", "--python", str(py), "--no-deps",
                        *map(str, wheels.glob("*.whl"))], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for name, (mod, domain) in PACKAGES.items():
        code = (f"import {mod} as m, mae_core.registry as r; import os; "
                f"assert os.path.realpath(m.__file__).startswith(os.path.realpath('{site}')), m.__file__; "
                f"print(len(r.methods('{domain}')))")
        res = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                             timeout=300)
        assert res.returncode == 0, (name, res.stderr[-1500:])
        assert int(res.stdout.strip().splitlines()[-1]) >= 1, name
        script = venv / "bin" / name
        assert script.exists(), f"console script {name} missing"
    res = subprocess.run([str(venv / "bin" / "mae-core"), "info"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0 and "image-mae" in res.stdout, res.stderr[-1500:]
