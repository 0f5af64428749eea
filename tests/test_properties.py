"""Property-based tests (hypothesis): random values for every field of every config (TrainConfig, every registered
method's model config, every dataset config, the probe / fine-tune options) through ``from_dict``, and random bytes
as the input of every file reader. The only outcomes allowed: a valid result, or a one-line MaeError
(ConfigError / DataError). Any other exception is a bug (the CLI would print a traceback)."""
from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mae_core import MaeError, registry
from mae_core.config import from_dict
from mae_core.eval.probes import ProbeConfig
from mae_core.train import TrainConfig
from mae_core.workflows import FinetuneConfig

DOMAINS = ["core", "medical", "3d", "video", "graph", "audio", "text"]
FAST = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _config_classes():
    seen, out = set(), []
    for d in DOMAINS:
        registry.autoload(d)
        for spec in [*registry.methods(d), *registry.datasets(d)]:
            if spec.config_cls not in seen:
                seen.add(spec.config_cls)
                out.append(pytest.param(spec.config_cls, id=f"{d}:{spec.name}"))
    for cls in (TrainConfig, ProbeConfig, FinetuneConfig):
        out.append(pytest.param(cls, id=cls.__name__))
    return out


ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 2),
    st.text(max_size=12), st.sampled_from(["", "none", "auto", "cpu", "cuda", "cuda:0", "1e-3", "0", "-1", "nan",
                                           "inf", "true", "%s", "a,b", "1 2 3"]),
    st.lists(st.one_of(st.integers(-5, 100), st.floats(-1, 100), st.text(max_size=4)), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _in_bounds(v, bounds) -> bool:
    if not bounds or v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return True
    if isinstance(v, float) and not math.isfinite(v):
        return False
    ops = {"ge": v >= bounds.get("ge", -math.inf), "gt": v > bounds.get("gt", -math.inf),
           "le": v <= bounds.get("le", math.inf), "lt": v < bounds.get("lt", math.inf)}
    return all(ops.values())


@pytest.mark.parametrize("cls", _config_classes())
def test_random_field_values_give_a_config_or_a_one_line_error(cls):
    fields = [f.name for f in dataclasses.fields(cls)]
    hints = typing.get_type_hints(cls)

    @FAST
    @given(st.dictionaries(st.sampled_from(fields), ANY_VALUE, min_size=1, max_size=4))
    def check(values):
        try:
            obj = from_dict(cls, values, where="cfg")
        except MaeError as e:
            msg = str(e)
            assert msg and "\n" not in msg and msg.startswith("cfg"), msg
            return
        for f in dataclasses.fields(cls):  # what is accepted respects the declared type, choices and range
            v = getattr(obj, f.name)
            assert _in_bounds(v, f.metadata.get("bounds")), (f.name, v)
            if "choices" in f.metadata:
                assert v in f.metadata["choices"], (f.name, v)
            base = typing.get_args(hints[f.name]) or (hints[f.name],)
            if v is not None and int in base and float not in base and not isinstance(v, (list, tuple)):
                assert isinstance(v, int) and not isinstance(v, bool), (f.name, v)

    check()


def test_train_config_device_and_lr_are_checked():
    """Known values the random search must not be trusted to find."""
    for bad in ({"device": "gpu"}, {"device": "cuda:x"}, {"lr": float("nan")}, {"base_lr": 0}, {"batch_size": 0},
                {"epochs": 0}, {"accum_steps": 0}, {"log_every": 0}, {"keep_last": 0}, {"clip_grad": 0.0}):
        with pytest.raises(MaeError):
            from_dict(TrainConfig, bad, where="train")
    for good in ({"device": "cpu"}, {"device": "auto"}, {"device": "cuda:1"}, {"lr": 1e-3}, {"max_steps": 0}):
        from_dict(TrainConfig, good, where="train")


# ---- readers --------------------------------------------------------------------------------------------------------
def _readers():
    """(name, file name, read(path)) for every reader of user files."""
    from mae_core.checkpoint import load_foreign, read_weights
    from mae_core.config import load_yaml
    from mae_core.data import load_npy, safe_unpickle
    from mae_core.data.folder import verify_images

    def image(p):
        return verify_images([(str(p), 0)], str(p))

    def nifti(p):
        from mae_medical.data.brain_folder import check_nifti
        return check_nifti("case", p)

    def cloud(p):
        from mae_3d.io import read_any
        return read_any(p, num_points=16)

    def scan(p):
        from mae_3d.io import read_scan
        return read_scan(p)

    def video(p):
        from mae_video.data.io import probe_video, read_frames
        return probe_video(p) and read_frames(p, [0])

    def audio(p):
        from mae_audio.features import read_audio
        return read_audio(p)

    def text(p):
        from mae_text.data import read_corpus
        return read_corpus(p)

    def ntu(p):
        from mae_graph.data.skeleton import read_ntu_skeleton
        return read_ntu_skeleton(p)

    def tu(p):
        from mae_graph.data.graphs import load_tu
        p.rename(p.parent / "X_A.txt")
        (p.parent / "X_graph_indicator.txt").write_text("1\n1\n2\n")
        (p.parent / "X_graph_labels.txt").write_text("1\n2\n")
        return load_tu(p.parent, "X")

    return [("yaml", "c.yaml", load_yaml), ("safetensors", "w.safetensors", read_weights),
            ("torch", "w.pth", load_foreign), ("pickle", "ind.cora.x", safe_unpickle), ("npy", "a.npy", load_npy),
            ("png", "i.png", image), ("jpeg", "i.jpg", image), ("nifti", "v.nii.gz", nifti),
            ("nifti-raw", "v.nii", nifti),
            ("ply", "c.ply", cloud), ("pcd", "c.pcd", cloud), ("off", "m.off", cloud), ("xyz-npy", "c.npy", cloud),
            ("kitti-bin", "s.bin", scan), ("mp4", "v.mp4", video), ("wav", "a.wav", audio), ("flac", "a.flac", audio),
            ("jsonl", "t.jsonl", text), ("txt", "t.txt", text), ("ntu", "S001C001P001R001A001.skeleton", ntu),
            ("tu", "X_A.txt", tu)]


HEADERS = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff\xe0", "nifti-raw": b"\x5c\x01\x00\x00",
           "ply": b"ply\nformat ascii 1.0\n", "pcd": b"# .PCD v0.7\nFIELDS x y z\n", "off": b"OFF\n",
           "npy": b"\x93NUMPY\x01\x00", "xyz-npy": b"\x93NUMPY\x01\x00", "pickle": b"\x80\x02",
           "mp4": b"\x00\x00\x00\x18ftypmp42", "wav": b"RIFF\x24\x00\x00\x00WAVEfmt ", "flac": b"fLaC",
           "safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{", "torch": b"PK\x03\x04"}


@pytest.mark.parametrize("name,filename,read", [pytest.param(*r, id=r[0]) for r in _readers()])
def test_random_bytes_give_a_result_or_a_one_line_error(name, filename, read, tmp_path_factory):
    head = HEADERS.get(name, b"")

    @settings(max_examples=15, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=300), st.booleans())
    def check(data, with_header):
        folder = tmp_path_factory.mktemp(name)
        path = Path(folder) / filename
        path.write_bytes((head if with_header else b"") + data)
        try:
            read(path)
        except MaeError as e:
            msg = str(e)
            assert msg and "\n" not in msg, msg

    check()
