"""The bad-input table of docs/training.md, one row per case: each command line, run in-process through its
package's ``main(argv)``, exits with status 2, prints exactly one line ``error: ...`` containing the expected text
on stderr, and leaves the working folder exactly as it was (no run directory, no output file, an existing run
untouched)."""
from __future__ import annotations

import importlib
import warnings
import pickle
from pathlib import Path

import numpy as np
import pytest

MAINS = {"core": "mae_core.cli", "medical": "mae_medical.cli", "3d": "mae_3d.cli", "video": "mae_video.cli",
         "graph": "mae_graph.cli", "audio": "mae_audio.cli", "text": "mae_text.cli"}


# ---- inputs the cases refer to (made inside the test's working folder) -------------------------------------------
def binary_file(d: Path) -> str:
    (d / "binary.yaml").write_bytes(bytes(range(256)) * 8)
    return "binary.yaml"


def folder_config(d: Path) -> str:
    (d / "conf.yaml").mkdir()
    return "conf.yaml"


def bad_key_config(d: Path) -> str:
    (d / "bad.yaml").write_text("model:\n  embed_dimm: 64\n")
    return "bad.yaml"


def existing_run(d: Path) -> str:
    (d / "runs" / "old" / "checkpoints").mkdir(parents=True)
    (d / "runs" / "old" / "config.yaml").write_text("method: image-mae\n")
    return "runs/old"


def file_parent(d: Path) -> str:
    (d / "notafolder").write_text("x")
    return "notafolder/out.nii.gz"


def empty_folder(d: Path) -> str:
    (d / "empty").mkdir()
    return "empty"


def zero_volume_cases(d: Path) -> str:
    import nibabel as nib

    from mae_medical.data.synthetic_brain import write_cases

    cases = write_cases(d / "brains", num=2, size=16)
    case = Path(cases[0])
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), np.eye(4)), str(case / f"{case.name}_t2.nii.gz"))
    return "brains"


def still_videos(d: Path) -> str:
    from mae_video.data.io import write_video

    (d / "videos" / "a").mkdir(parents=True)
    write_video(d / "videos" / "a" / "still.mp4", np.zeros((1, 16, 16, 3), np.uint8))
    return "videos"


def tu_without_edges(d: Path) -> str:
    (d / "tu").mkdir()
    (d / "tu" / "T_A.txt").write_text("")
    (d / "tu" / "T_graph_indicator.txt").write_text("1\n1\n2\n")
    (d / "tu" / "T_graph_labels.txt").write_text("1\n2\n")
    return "tu"


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo owned",))


def evil_planetoid(d: Path) -> str:
    (d / "planetoid").mkdir()
    for part in ("x", "tx", "allx", "y", "ty", "ally", "graph"):
        (d / "planetoid" / f"ind.cora.{part}").write_bytes(pickle.dumps(_Evil()))
    (d / "planetoid" / "ind.cora.test.index").write_text("0\n")
    return "planetoid"


def no_audio(d: Path) -> str:
    (d / "sounds" / "a").mkdir(parents=True)
    (d / "sounds" / "a" / "x.wav").write_bytes(b"RIFF\x00\x00")
    return "sounds"


def nan_npz(d: Path) -> str:
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype(np.float32)
    x[3, 0, 0, 0] = np.nan
    np.savez(d / "nan.npz", images=x, labels=np.zeros(8, np.int64))
    return "nan.npz"


def broken_images(d: Path) -> str:
    (d / "imgs" / "cat").mkdir(parents=True)
    (d / "imgs" / "cat" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return "imgs"


def bad_text(d: Path) -> str:
    (d / "corpus.jsonl").write_bytes(b'{"text": "fine"}\n\x80\x81 not utf-8\n')
    return "corpus.jsonl"


PREPARE = {f.__name__: f for f in (binary_file, folder_config, bad_key_config, existing_run, file_parent,
                                     empty_folder, zero_volume_cases, still_videos, tu_without_edges, evil_planetoid,
                                     no_audio, nan_npz, broken_images, bad_text)}

# (id, domain, argv ("{name}" = the path an input maker returns), expected text of the one-line error)
CASES = [
    # mae-core
    ("core-batch-size-0", "core", "pretrain --batch-size 0 --out r", "batch_size: must be >= 1, got 0"),
    ("core-epochs-negative", "core", "pretrain --epochs -1 --out r", "epochs: must be >= 1, got -1"),
    ("core-lr-nan", "core", "pretrain --lr nan --out r", "lr: must be a finite number, got nan"),
    ("core-lr-zero", "core", "pretrain --base-lr 0 --out r", "base_lr: must be > 0, got 0.0"),
    ("core-log-every-0", "core", "pretrain --log-every 0 --out r", "log_every: must be >= 1, got 0"),
    ("core-keep-last-0", "core", "pretrain --keep-last 0 --out r", "keep_last: must be >= 1, got 0"),
    ("core-unknown-device", "core", "pretrain --device gpu --out r", "'gpu' is not a device"),
    ("core-mask-ratio-1", "core", "pretrain --mask-ratio 1.0 --out r", "mask_ratio: must be >= 0 and < 1"),
    ("core-heads-width", "core", "pretrain --embed-dim 30 --num-heads 4 --out r",
     "num_heads (4) must divide embed_dim"),
    ("core-num-train-0", "core", "pretrain --num-train 0 --out r", "num_train: must be >= 1, got 0"),
    ("core-binary-config", "core", "pretrain --config {binary_file} --out r", "is not a text (UTF-8) file"),
    ("core-folder-config", "core", "pretrain --config {folder_config} --out r", "is a folder, not a YAML config"),
    ("core-unknown-key", "core", "pretrain --config {bad_key_config} --out r", "unknown key 'embed_dimm'"),
    ("core-overwrite-bad-flag", "core", "pretrain --out {existing_run} --overwrite --batch-size 1000 --num-train 64",
     "fewer than one global batch"),
    ("core-missing-data", "core", "pretrain --data nowhere --out r",
     "nowhere: no such file or folder (--data)"),
    ("core-broken-images", "core", "pretrain --data {broken_images} --out r", "a.png: cannot read image"),
    ("core-nan-array", "core", "pretrain --data {nan_npz} --out r", "contains NaN or inf"),
    ("core-unknown-command", "core", "pretrian", "unknown command 'pretrian'"),
    ("core-quiet-verbose", "core", "info --quiet --verbose", "--quiet and --verbose given together"),
    ("core-probe-k-0", "core", "probe --k 0", "k: must be >= 1"),
    # mae-medical
    ("medical-num-train-0", "medical", "pretrain --num-train 0 --out r", "num_train: must be >= 1, got 0"),
    ("medical-no-data", "medical", "pretrain --dataset brain-folder --out r", "give --data PATH"),
    ("medical-zero-volume", "medical", "pretrain --data {zero_volume_cases} --out r",
     "is empty (every voxel is 0)"),
    ("medical-flip-prob", "medical", "pretrain --dataset brain-folder --data {empty_folder} --flip-prob 2 --out r",
     "flip_prob: must be >= 0 and <= 1, got 2.0"),
    ("medical-impute-out-not-folder", "medical",
     "impute --run {empty_folder} --case c --missing flair --out {file_parent}", "notafolder is not a folder"),
    ("medical-unknown-method", "medical", "pretrain --method nope --out r", "nope"),
    # mae-3d
    ("3d-num-points-0", "3d", "pretrain --num-points 0 --out r", "num_points: must be >= 1, got 0"),
    ("3d-grid-zero", "3d", "pretrain --method r-mae --data-grid 64 0 8 --out r", "grid[1]: must be >= 1, got 0"),
    ("3d-voxel-size-2", "3d", "pretrain --method r-mae --data-voxel-size 0.8 0.8 --out r",
     "voxel_size: expected 3 values"),
    ("3d-missing-data", "3d", "pretrain --data nowhere --out r", "nowhere"),
    ("3d-empty-folder", "3d", "pretrain --data {empty_folder} --out r", "empty"),
    # mae-video
    ("video-num-frames-0", "video", "pretrain --num-frames 0 --out r", "num_frames: must be >= 1, got 0"),
    ("video-single-frame", "video", "pretrain --data {still_videos} --out r", "no readable video of two or more"),
    ("video-test-fraction-1", "video", "pretrain --dataset video-folder --data {empty_folder} --test-fraction 1 --out r",
     "test_fraction: must be >= 0 and < 1, got 1.0"),
    ("video-stride-0", "video", "pretrain --dataset video-folder --data {empty_folder} --stride 0 --out r",
     "stride: must be >= 1, got 0"),
    # mae-graph
    ("graph-mask-rate-0", "graph", "pretrain --mask-rate 0 --out r", "masks no node"),
    ("graph-tu-no-edges", "graph", "pretrain --dataset tudataset --data {tu_without_edges} --name T --out r",
     "no edges at all"),
    ("graph-tu-no-data", "graph", "pretrain --dataset tudataset --out r", "give the folder"),
    ("graph-min-max-nodes", "graph", "pretrain --dataset synthetic-graphs --min-nodes 30 --max-nodes 10 --out r",
     "min_nodes (30) must be <= max_nodes (10)"),
    ("graph-planetoid-pickle", "graph", "pretrain --dataset planetoid --data {evil_planetoid} --out r",
     "system"),
    # mae-audio
    ("audio-mel-bins-0", "audio", "pretrain --num-mel-bins 0 --out r", "num_mel_bins: must be >= 1, got 0"),
    ("audio-target-length", "audio", "pretrain --target-length -1 --out r", "target_length: must be >= 1"),
    ("audio-norm-std-0", "audio", "pretrain --norm-std 0 --out r", "norm_std: must be > 0"),
    ("audio-no-readable-audio", "audio", "pretrain --data {no_audio} --bad-files error --out r", "x.wav"),
    # mae-text
    ("text-vocab-0", "text", "pretrain --data-vocab-size 0 --out r", "vocab_size: must be >= 1, got 0"),
    ("text-test-fraction", "text", "pretrain --test-fraction 1.5 --out r", "test_fraction: must be >= 0 and < 1"),
    ("text-missing-data", "text", "pretrain --data nowhere.txt --out r",
     "nowhere.txt: no such file or folder (--data)"),
    ("text-not-utf8", "text", "pretrain --data {bad_text} --out r", "corpus.jsonl:2: not UTF-8 text (byte 17)"),
    ("text-encode-out-not-folder", "text", "encode --run {empty_folder} --data {empty_folder} --out {file_parent}",
     "notafolder is not a folder"),
]


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("domain,argv,expected", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input(domain, argv, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    names = {}
    for name, make in PREPARE.items():
        if "{" + name + "}" in argv:
            names[name] = make(tmp_path)
    args = argv.format(**names).split()
    before = _tree(tmp_path)
    main = importlib.import_module(MAINS[domain]).main
    capsys.readouterr()
    with warnings.catch_warnings(record=True):  # a skipped-file warning on the way to the error is expected behaviour
        warnings.simplefilter("always")
        assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("warning: ")]  # counted warnings may precede the error
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert _tree(tmp_path) == before, "the command left something behind or changed an input"


def test_table_in_docs_lists_every_case():
    """docs/training.md has one row per case here (by its id), and at least 40 cases over all seven CLIs."""
    doc = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    assert len(CASES) >= 40 and {c[1] for c in CASES} == set(MAINS)
    missing = [c[0] for c in CASES if f"`{c[0]}`" not in doc]
    assert not missing, missing


@pytest.mark.parametrize("domain", sorted(MAINS))
@pytest.mark.parametrize("flag", ["--data", "--config"])
def test_missing_input_path_is_worded_the_same_in_every_domain(domain, flag, tmp_path, capsys):
    main = importlib.import_module(MAINS[domain]).main
    missing = str(tmp_path / "nowhere")
    assert main(["pretrain", flag, missing, "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {missing}: no such file or folder ({flag})"
    assert not (tmp_path / "r").exists()


def test_missing_data_fails_before_the_domain_is_imported(tmp_path):
    """`mae-core pretrain --data <missing>` answers before the image domain (and torchvision) is imported."""
    import subprocess
    import sys

    code = ("import sys; from mae_core.cli import main; rc = main(['pretrain', '--data', sys.argv[1]]); "
            "print(rc, 'mae_core.image' in sys.modules, 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert out.stdout.split() == ["2", "False", "False"], out.stdout + out.stderr
