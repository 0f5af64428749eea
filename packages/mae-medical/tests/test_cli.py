"""The mae-medical CLI end to end on tiny synthetic data."""
import json

import nibabel as nib
import numpy as np

from mae_medical.cli import main
from mae_medical.data.synthetic_brain import write_cases

TINY = ["--preset", "bm-mae-tiny", "--embed-dim", "32", "--depth", "1", "--decoder-embed-dim", "32",
        "--num-heads", "2", "--decoder-num-heads", "2", "--no-progress", "--device", "cpu"]


def test_cli_pretrain_probe_finetune_impute(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *TINY, "--num-train", "8", "--num-test", "4", "--epochs", "1", "--batch-size", "4",
                 "--out", str(run)]) == 0
    assert (run / "model.safetensors").exists() and (run / "pictures" / "reconstruction.png").exists()
    assert main(["probe", "--run", str(run), "--probe", "knn", "--k", "3", "--num-train", "8", "--num-test",
                 "4"]) == 0
    assert main(["finetune", "--run", str(run), "--modalities", "t1", "t2", "--num-train", "8", "--num-test", "4",
                 "--epochs", "1", "--batch-size", "4", "--no-progress", "--out", str(tmp_path / "ft")]) == 0
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert 0 <= summary["test_acc"] <= 1
    # impute FLAIR of a NIfTI case from the other three; output on the input grid with the input affine
    case = write_cases(tmp_path / "cases", num=1, size=40, style="brats2023")[0]
    out = tmp_path / "flair.nii.gz"
    capsys.readouterr()
    assert main(["impute", "--run", str(run), "--case", str(case), "--missing", "flair", "--out", str(out),
                 "--figure", str(tmp_path / "imp.png")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ref = nib.load(str(case / f"{case.name}-t1n.nii.gz"))
    img = nib.load(str(out))
    assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
    assert np.isfinite(img.get_fdata()).all() and (img.get_fdata() != 0).any()
    assert {"psnr", "ssim", "baseline_mean_psnr"} <= set(res) and (tmp_path / "imp.png").exists()
    # the feature itself: a case that has no FLAIR file gets one imputed (nothing to compare with, so no PSNR)
    (case / f"{case.name}-t2f.nii.gz").unlink()
    out2 = tmp_path / "flair-absent.nii.gz"
    capsys.readouterr()
    assert main(["impute", "--run", str(run), "--case", str(case), "--missing", "flair", "--out", str(out2)]) == 0
    res2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert nib.load(str(out2)).shape == ref.shape and "psnr" not in res2 and res2["inputs"] == ["t1", "t1ce", "t2"]
    # unknown modality: one-line error, nothing written
    assert main(["impute", "--run", str(run), "--case", str(case), "--missing", "pd", "--out",
                 str(tmp_path / "pd.nii.gz")]) == 2
    assert not (tmp_path / "pd.nii.gz").exists()
    assert main(["info"]) == 0
    assert "impute" in capsys.readouterr().out
