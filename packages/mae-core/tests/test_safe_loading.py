"""User files are read without running code in them: restricted unpickling, numpy without pickles, YAML safe_load."""
import pickle
import sys
from collections import defaultdict

import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from mae_core.config import load_yaml
from mae_core.data import ArrayImageConfig, ArrayImageDataset, load_npy, safe_unpickle
from mae_core.errors import ConfigError, DataError
from mae_core.testing import MarkerPayload


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_marker_payload_runs_code_under_plain_pickle(tmp_path):
    """The payload used by every refusal test does run code when loaded the ordinary way."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(MarkerPayload(marker)))
    assert marker.read_text() == "ran"


def _stack_global_pickle(module: str, name: str) -> bytes:
    """Protocol-4 pickle: ``module.name()`` via STACK_GLOBAL + REDUCE."""
    def s(x: str) -> bytes:
        b = x.encode()
        return b"\x8c" + bytes([len(b)]) + b  # SHORT_BINUNICODE
    return b"\x80\x04" + s(module) + s(name) + b"\x93" + b")" + b"R" + b"."  # STACK_GLOBAL, EMPTY_TUPLE, REDUCE


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_safe_unpickle_refuses_code_and_names_file_and_global(tmp_path, protocol):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"n": [1, 2], "payload": MarkerPayload(marker)}, protocol=protocol))
    with pytest.raises(DataError) as err:
        safe_unpickle(path)
    msg = one_line(err)
    assert str(path) in msg and ("builtins.exec" in msg or "__builtin__.exec" in msg)  # as the file spells it
    assert not marker.exists()
    with open(path, "rb") as fh:  # an open file: named by its name
        with pytest.raises(DataError, match="builtin(s|__).exec"):
            safe_unpickle(fh)
    assert not marker.exists()


def test_safe_unpickle_refuses_before_importing_the_module(tmp_path, monkeypatch):
    """A refused global's module is never imported: importing it would already run its top-level code."""
    marker = tmp_path / "imported"
    (tmp_path / "trap_module_xyz.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\ndef f(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "trap.pkl"
    path.write_bytes(_stack_global_pickle("trap_module_xyz", "f"))
    with pytest.raises(DataError) as err:
        safe_unpickle(path)
    assert "trap_module_xyz.f" in one_line(err)
    assert not marker.exists() and "trap_module_xyz" not in sys.modules
    with pytest.raises(DataError, match="posix.system|os.system"):  # the payload
        safe_unpickle(_bytes_file(tmp_path, _stack_global_pickle("posix", "system")))


def _bytes_file(tmp_path, data: bytes):
    p = tmp_path / "payload.pkl"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("protocol", [3, 4])  # Python 3 spellings: numpy._core, scipy.sparse._csr
def test_safe_unpickle_reads_planetoid_types(tmp_path, protocol):
    rng = np.random.default_rng(0)
    dense = (rng.random((5, 7)) < 0.3).astype(np.float32)
    graph = defaultdict(list, {0: [1, 2], 3: [4]})
    obj = {"x": sp.csr_matrix(dense), "y": np.eye(5, 3, dtype=np.int32), "graph": graph}
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    back = safe_unpickle(path)  # the Python 2 spellings: test_real_cora_reads (mae-graph)
    assert isinstance(back["x"], sp.csr_matrix) and np.array_equal(back["x"].toarray(), dense)
    assert back["y"].dtype == np.int32 and np.array_equal(back["y"], obj["y"])
    assert isinstance(back["graph"], defaultdict) and dict(back["graph"]) == {0: [1, 2], 3: [4]}


def test_safe_unpickle_allow_list_is_exact(tmp_path):
    """A legitimate global outside the allow-list is refused too, and allowed once listed."""
    from collections import OrderedDict

    path = _bytes_file(tmp_path, pickle.dumps(OrderedDict(a=1), protocol=2))
    with pytest.raises(DataError, match="collections.OrderedDict"):
        safe_unpickle(path)
    assert safe_unpickle(path, allowed={("collections", "OrderedDict")}) == OrderedDict(a=1)


@pytest.mark.parametrize("data", [b"", b"\x80\x02]q\x00(K\x01", b"not a pickle at all"])
def test_safe_unpickle_corrupt_file_is_one_line_error(tmp_path, data):
    path = _bytes_file(tmp_path, data)
    with pytest.raises(DataError) as err:
        safe_unpickle(path)
    assert str(path) in one_line(err)


def _object_array(marker) -> np.ndarray:
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = MarkerPayload(marker), 1
    return arr


def test_load_npy_refuses_object_arrays(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.npy"
    np.save(path, _object_array(marker))
    with pytest.raises(DataError) as err:
        load_npy(path)
    assert str(path) in one_line(err) and "object array" in str(err.value)
    assert not marker.exists()
    np.load(path, allow_pickle=True)  # the file is live: the ordinary pickle path runs the payload
    assert marker.exists()
    np.save(tmp_path / "ok.npy", np.arange(6.0).reshape(2, 3))
    assert np.array_equal(load_npy(tmp_path / "ok.npy"), np.arange(6.0).reshape(2, 3))


def test_array_image_npz_refuses_object_arrays(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.npz"
    np.savez(path, train_images=_object_array(marker), train_labels=np.zeros(2, dtype=np.int64))
    with pytest.raises(DataError) as err:
        ArrayImageDataset(ArrayImageConfig(path=str(path), image_size=4), "train")
    assert str(path) in one_line(err) and "object array" in str(err.value)
    assert not marker.exists()
    good = tmp_path / "ok.npz"
    np.savez(good, train_images=np.zeros((2, 4, 4, 3), np.uint8), train_labels=np.array([0, 1]))
    ds = ArrayImageDataset(ArrayImageConfig(path=str(good), image_size=4), "train")
    assert len(ds) == 2


def test_yaml_config_refuses_python_tags(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "config.yaml"
    path.write_text(f"train:\n  epochs: !!python/object/apply:builtins.exec [\"open({str(marker)!r}, 'w')\"]\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert str(path) in one_line(err)
    assert not marker.exists()
    yaml.unsafe_load(path.read_text())  # the file is live under the unsafe loader
    assert marker.exists()
    path.write_text("train:\n  epochs: 3\n")
    assert load_yaml(path) == {"train": {"epochs": 3}}
