"""The public Python API of mae-core (issue 16): the README snippet, the registry rules, and the CLI as a thin layer
over the same calls (a run made from Python equals the run the CLI makes)."""
import ast
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mae_core
from mae_core import registry
from mae_core.errors import ConfigError, MaeError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(img_size=16, image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16,
            decoder_depth=1, decoder_num_heads=2, num_train=48, num_test=16, batch_size=16, epochs=1,
            progress=False)


def _flags(opts: dict) -> list[str]:
    out = []
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        out += [flag] if v is True else [f"--no-{k.replace('_', '-')}"] if v is False else [flag, str(v)]
    return out


def test_list_models_sees_every_installed_domain():
    names = mae_core.list_models()
    for name in ("image-mae", "point-mae", "bm-mae", "videomae", "graphmae", "audio-mae", "retromae"):
        assert name in names
    assert mae_core.list_models("point-*") == ["point-bert", "point-cmae", "point-dvae", "point-mae"]
    core = mae_core.list_models(domain="core")
    assert "image-mae" in core and "point-mae" not in core
    assert "shapes" in mae_core.list_datasets() and "shapes3d" in mae_core.list_datasets()


def test_create_model_takes_overrides_and_applies_adapt():
    m = mae_core.create_model("image-mae", depth=1, embed_dim=32, num_heads=2)
    assert m.config.depth == 1 and m.method_name == "image-mae" and len(m.encoder.blocks) == 1
    # adapt: the model follows its dataset (here a 16-px shapes set)
    m16 = mae_core.create_model("image-mae", data_config={"image_size": 16}, embed_dim=32, num_heads=2)
    assert m16.config.img_size == 16
    # a built dataset: the model follows that dataset's own config
    ds = mae_core.create_dataset("shapes", image_size=24, num_train=8, num_test=4)
    assert mae_core.create_model("image-mae", dataset=ds, embed_dim=32, num_heads=2).config.img_size == 24
    # adapt=False builds exactly the config given
    assert mae_core.create_model("image-mae", adapt=False, img_size=24).config.img_size == 24
    with pytest.raises(ConfigError, match="unknown key 'dept'"):
        mae_core.create_model("image-mae", dept=3)
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        mae_core.create_model("nope")


def test_registering_a_name_twice_is_an_error():
    spec = registry.get_method("image-mae")
    clash = registry.MethodSpec(name="image-mae", domain="core", config_cls=spec.config_cls,
                                model_cls=lambda cfg: None)
    with pytest.raises(ConfigError, match="already registered"):
        registry.register_method(clash)
    assert registry.get_method("image-mae") is spec
    registry.register_method(spec)  # the same registration again (a module imported twice) is fine


def test_registry_and_launch_name_no_domain():
    src = ROOT / "packages/mae-core/src/mae_core"
    for f in ("registry.py", "launch.py"):
        text = (src / f).read_text()
        for name in ("mae_3d", "mae_medical", "mae_video", "mae_graph", "mae_audio", "mae_text", "mae_core.image"):
            assert name not in text, f"{f} names {name}"
    assert set(registry.domain_entry_points()) == {"core", "medical", "3d", "video", "graph", "audio", "text"}


def _imports_of(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mae_core"):
            for alias in node.names:
                yield node.module, alias.name, node.lineno
            for part in node.module.split("."):
                if part.startswith("_"):
                    yield node.module, part, node.lineno
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "mae_core":
            yield "mae_core", node.attr, node.lineno


def test_no_domain_package_imports_a_private_core_name():
    bad = []
    for pkg in ("mae-medical", "mae-3d", "mae-video", "mae-graph", "mae-audio", "mae-text"):
        for f in sorted((ROOT / "packages" / pkg / "src").rglob("*.py")):
            for module, name, line in _imports_of(f):
                if name.startswith("_") and not name.startswith("__"):
                    bad.append(f"{f.relative_to(ROOT)}:{line} {module}.{name}")
    assert not bad, bad


def test_no_core_file_is_over_400_lines():
    long = [f"{f.relative_to(ROOT)} ({n})" for f in (ROOT / "packages/mae-core/src").rglob("*.py")
            if (n := len(f.read_text().splitlines())) > 400]
    assert not long, long


def test_the_readme_snippet_from_python(tmp_path):
    """pretrain -> load_run -> encode -> probe -> save_pretrained / from_pretrained, all from Python."""
    run = mae_core.pretrain("image-mae", out=str(tmp_path / "y"), **TINY)
    assert isinstance(run, mae_core.Run) and run.summary["steps"] == 3
    loaded = mae_core.load_run(tmp_path / "y")
    assert loaded.config.method.name == "image-mae" and loaded.config.data.image_size == 16
    batch = {"image": torch.stack([loaded.dataset("test")[i]["image"] for i in range(4)])}
    feats = loaded.model.encode(batch)
    assert feats.shape == (4, loaded.model.feature_dim())
    res = mae_core.probe(loaded, kind="linear", probe_epochs=3)
    assert set(res["linear"]) >= {"acc"} and 0 <= res["linear"]["acc"] <= 1
    loaded.model.save_pretrained(tmp_path / "dir")
    back = mae_core.from_pretrained(tmp_path / "dir")
    back.eval(), loaded.model.eval()
    with torch.no_grad():
        assert torch.allclose(back.encode(batch), loaded.model.encode(batch))
    summary = mae_core.finetune(loaded, out=str(tmp_path / "ft"), epochs=1, batch_size=16, progress=False)
    assert "test_acc" in summary and (tmp_path / "ft" / "head.safetensors").exists()


def test_python_run_equals_cli_run(tmp_path):
    """The CLI is flags -> the same configs -> the same call: identical weights and resolved config."""
    from mae_core.cli import main

    mae_core.pretrain("image-mae", out=str(tmp_path / "py"), mask_ratio=0.6, data_seed=3, **TINY)
    assert main(["pretrain", "--out", str(tmp_path / "cli"), "--mask-ratio", "0.6", "--data-seed", "3",
                 *_flags(TINY)]) == 0
    a, b = load_file(tmp_path / "py" / "model.safetensors"), load_file(tmp_path / "cli" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = json.loads((tmp_path / "py" / "config.json").read_text())["run_config"]
    cb = json.loads((tmp_path / "cli" / "config.json").read_text())["run_config"]
    assert ca == cb and ca["model"]["mask_ratio"] == 0.6 and ca["data"]["seed"] == 3


def test_api_errors_name_the_option(tmp_path):
    with pytest.raises(ConfigError, match="unknown option 'epoch'"):
        mae_core.pretrain("image-mae", out=str(tmp_path / "z"), epoch=1)
    with pytest.raises(MaeError, match="run directory not found"):
        mae_core.load_run(tmp_path / "missing")
    assert not (tmp_path / "z").exists()
