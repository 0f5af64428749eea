import json

from mae_3d.cli import main

TINY = ["--preset", "point-mae-tiny", "--num-points", "128", "--num-groups", "8", "--group-size", "16",
        "--train-per-class", "6", "--test-per-class", "4", "--num-classes", "4", "--no-progress"]


def test_cli_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *TINY, "--epochs", "2", "--batch-size", "8", "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and (run / "pictures" / "reconstruction.png").stat().st_size > 0
    assert (run / "model.safetensors").exists()
    assert main(["probe", "--run", str(run), "--probe", "svm,knn", "--probe-batch-size", "16"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["probe"]["svm"]["acc"] <= 1.0
    assert main(["fewshot", "--run", str(run), "--way", "3", "--shot", "2", "--query", "3", "--folds", "3"]) == 0
    assert "fewshot_3way_2shot" in json.loads((run / "summary.json").read_text())
    assert main(["finetune", "--run", str(run), "--epochs", "1", "--batch-size", "8", "--no-progress",
                 "--out", str(tmp_path / "ft")]) == 0
    assert "test_acc" in json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert main(["reconstruct", "--run", str(run), "--num", "2", "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").stat().st_size > 0


def test_cli_bad_data_is_one_line_error(tmp_path, capsys):
    assert main(["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_point_mae_on_the_embedded_shapes_trains_at_lr_3e_4_and_user_clouds_at_1e_3():
    # at 1e-3 the embedded run's 222 steps leave features no better than a random encoder's; 3e-4 (about the
    # reference's 1e-3 at batch 128, scaled to 32) gains in every seed measured (docs/benchmarks.md, 3-D rows)
    import mae_core
    from mae_core.runconfig import resolve_run_config

    mae_core.registry.autoload()
    emb = resolve_run_config("point-mae", domain="3d")
    assert (emb.train.lr, emb.train.batch_size, emb.train.epochs) == (3e-4, 32, 6)
    user = resolve_run_config("point-mae", domain="3d", dataset="point-folder")
    assert (user.train.lr, user.train.batch_size, user.train.epochs) == (1e-3, 32, 6)
    assert resolve_run_config("point-cmae", domain="3d").train.lr == 1e-3
    assert resolve_run_config("point-mae", domain="3d", overrides={"lr": 2e-3}).train.lr == 2e-3
