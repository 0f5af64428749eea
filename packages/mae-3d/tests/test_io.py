import numpy as np
import pytest
import torch

from mae_core.errors import DataError
from mae_3d.data.folder import PointFolder, PointFolderConfig, build_point_data
from mae_3d.io import read_any, read_cloud, read_mesh, read_scan, write_cloud
from mae_3d.o3d import o3d


@pytest.mark.parametrize("ext", [".ply", ".pcd", ".xyz", ".pts", ".npy", ".bin"])
def test_cloud_round_trip(tmp_path, ext):
    pts = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    path = write_cloud(tmp_path / f"c{ext}", pts)
    back = read_scan(path) if ext == ".bin" else read_cloud(path)
    np.testing.assert_allclose(back, pts, atol=1e-4 if ext in (".xyz", ".pts") else 1e-6)


def _write_box(path):
    mesh = o3d().geometry.TriangleMesh.create_box(1.0, 2.0, 3.0)
    mesh.compute_triangle_normals()  # STL needs them
    assert o3d().io.write_triangle_mesh(str(path), mesh)


@pytest.mark.parametrize("ext", [".off", ".obj", ".stl"])
def test_mesh_sampled_on_surface(tmp_path, ext):
    _write_box(tmp_path / f"box{ext}")
    pts = read_mesh(tmp_path / f"box{ext}", num_points=500, seed=1)
    assert pts.shape == (500, 3)
    # every point lies on a face of the 1 x 2 x 3 box
    on_face = (np.isclose(pts, 0, atol=1e-5) | np.isclose(pts, [1, 2, 3], atol=1e-5)).any(1)
    assert on_face.all()
    np.testing.assert_array_equal(pts, read_mesh(tmp_path / f"box{ext}", num_points=500, seed=1))


def test_modelnet_off_header_fixed(tmp_path):
    _write_box(tmp_path / "ok.off")
    lines = (tmp_path / "ok.off").read_text().splitlines()
    assert lines[0].strip() == "OFF"
    (tmp_path / "bad.off").write_text("OFF" + lines[1] + "\n" + "\n".join(lines[2:]) + "\n")
    pts = read_mesh(tmp_path / "bad.off", num_points=64)
    assert pts.shape == (64, 3)


def test_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(DataError, match="empty.xyz.*empty"):
        read_cloud(tmp_path / "empty.xyz")
    (tmp_path / "nan.xyz").write_text("0 0 0\nnan 1 2\n")
    with pytest.raises(DataError, match="nan.xyz.*NaN"):
        read_cloud(tmp_path / "nan.xyz")
    np.save(tmp_path / "inf.npy", np.array([[0, 0, np.inf]], dtype=np.float32))
    with pytest.raises(DataError, match="inf.npy.*NaN or inf"):
        read_cloud(tmp_path / "inf.npy")
    (tmp_path / "junk.ply").write_bytes(b"this is not a ply file at all")
    with pytest.raises(DataError, match="junk.ply"):
        read_cloud(tmp_path / "junk.ply")
    (tmp_path / "flat.off").write_text("OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(DataError, match="flat.off.*no triangles"):
        read_mesh(tmp_path / "flat.off")
    with pytest.raises(DataError, match="missing.ply.*not found"):
        read_any(tmp_path / "missing.ply")
    (tmp_path / "odd.bin").write_bytes(np.zeros(5, np.float32).tobytes())
    with pytest.raises(DataError, match="odd.bin.*multiple of 4"):
        read_scan(tmp_path / "odd.bin")


PCD_HEAD = "# .PCD v0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"


@pytest.mark.parametrize("name,content,message", [
    ("huge.ply", "ply\nformat ascii 1.0\nelement vertex 2000000000\nproperty float x\nproperty float y\n"
                 "property float z\nend_header\n1 2 3\n", "2000000000 elements"),
    ("huge.pcd", PCD_HEAD + "WIDTH 2000000000\nHEIGHT 1\nPOINTS 2000000000\nDATA binary\n" + "x" * 12,
     "2000000000 points"),
    ("nopoints.pcd", PCD_HEAD + "DATA ascii\n1 2 3\n", "no POINTS line"),
    ("grid.pcd", PCD_HEAD + "WIDTH 2\nHEIGHT 2\nPOINTS 3\nDATA ascii\n1 2 3\n1 2 3\n1 2 3\n", "WIDTH x HEIGHT = 4"),
    ("nodata.pcd", PCD_HEAD + "POINTS 1\n1 2 3\n", "no 'DATA' line"),
    ("huge.off", "OFF\n2000000000 1 0\n0 0 0\n", "vertices and faces"),
    ("huge.pts", "2000000000\n1 2 3\n", "2000000000 points"),
])
def test_headers_that_declare_more_than_the_file_holds_are_refused(tmp_path, name, content, message):
    """Open3D sizes its buffers from these counts (a PCD with no POINTS line reads an uninitialised one): each is a
    one-line error before Open3D is called, never a multi-GB allocation."""
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=f"{name}: .*{message}"):
        read_any(tmp_path / name)


def test_binary_stl_triangle_count_is_checked(tmp_path):
    (tmp_path / "huge.stl").write_bytes(b"\0" * 80 + (10**8).to_bytes(4, "little") + b"\0" * 50)
    with pytest.raises(DataError, match="huge.stl: .*bytes of triangles"):
        read_mesh(tmp_path / "huge.stl")


def test_folder_dataset_modelnet_layout_skips_bad_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for c in ("chair", "table"):
        for split in ("train", "test"):
            d = tmp_path / c / split
            d.mkdir(parents=True)
            for i in range(3):
                write_cloud(d / f"{c}_{i}.ply", rng.normal(size=(200, 3)) * 10 + 5)
        _write_box(tmp_path / c / "train" / f"{c}_mesh.off")
    (tmp_path / "chair" / "train" / "broken.xyz").write_text("1 2 3\nnan nan nan\n")
    (tmp_path / "table" / "train" / "tiny.xyz").write_text("1 2 3\n4 5 6\n")
    cfg = PointFolderConfig(path=str(tmp_path), num_points=128, min_points=16)
    train = build_point_data(cfg, "train")
    err = capsys.readouterr().err
    assert "skipped 2 of 10 train files" in err
    assert len(train) == 8 and train.num_classes == 2 and train.classes == ["chair", "table"]
    x = train[0]["points"]
    assert x.shape == (128, 3) and torch.allclose(x.norm(dim=1).max(), torch.tensor(1.0))
    test = PointFolder(cfg, "test")
    assert len(test) == 6


def test_folder_all_bad_is_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.xyz").write_text("")
    with pytest.raises(DataError, match="none of the"):
        PointFolder(PointFolderConfig(path=str(tmp_path), val_fraction=0.0), "train")
    with pytest.raises(DataError, match="does not exist"):
        PointFolder(PointFolderConfig(path=str(tmp_path / "nope")), "train")


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", train_points=rng.normal(size=(6, 300, 3)).astype(np.float32) * 1e4,
             train_labels=np.array([0, 1, 2, 0, 1, 2]), test_points=rng.normal(size=(3, 300, 3)).astype(np.float32),
             test_labels=np.array([0, 1, 2]), class_names=np.array(["a", "b", "c"]))
    ds = build_point_data(PointFolderConfig(path=str(tmp_path / "d.npz"), num_points=256), "train")
    assert len(ds) == 6 and ds.num_classes == 3 and ds[0]["points"].shape == (256, 3)
    assert torch.allclose(ds.points.norm(dim=-1).amax(1), torch.ones(6))
    assert len(build_point_data(PointFolderConfig(path=str(tmp_path), num_points=256), "test")) == 3


@pytest.mark.parametrize("reader", ["cloud.npy", "points.npz", "names.npz"])
def test_numpy_readers_refuse_object_arrays(tmp_path, reader):
    """.npy clouds and .npz point sets are read without pickles: an object array (its unpickling would run code) is
    a one-line error naming the file, and the payload never runs."""
    from mae_core.testing import MarkerPayload

    marker = tmp_path / "ran"
    evil = np.empty(3, dtype=object)
    evil[:] = [MarkerPayload(marker), "b", "c"]
    path = tmp_path / reader
    pts = np.random.default_rng(0).normal(size=(3, 64, 3)).astype(np.float32)
    if reader == "cloud.npy":
        np.save(path, evil)
        read = lambda: read_cloud(path)  # noqa: E731
    else:
        arrays = dict(train_points=pts, train_labels=np.arange(3), class_names=np.array(["a", "b", "c"]))
        arrays["train_points" if reader == "points.npz" else "class_names"] = evil
        np.savez(path, **arrays)
        read = lambda: build_point_data(PointFolderConfig(path=str(path), num_points=32), "train")  # noqa: E731
    with pytest.raises(DataError, match="object array") as err:
        read()
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()

