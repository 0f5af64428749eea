import json

import pytest

from mae_graph.cli import main

SBM = ["--num-nodes", "150", "--num-blocks", "3", "--num-features", "24", "--num-val", "30", "--train-per-class", "8",
       "--feature-purity", "0.5"]
TINY = ["--num-hidden", "16", "--num-heads", "2", "--max-epoch-f", "30", "--probe-seeds", "2", "--no-progress"]


def test_cli_graphmae_node_level_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), "--epochs", "6", *SBM, *TINY]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["dataset"] == "sbm"
    # GraphMAE draws a t-SNE of the node embeddings, named for what it shows
    assert (run / "pictures" / "embeddings-tsne.png").exists() and (run / "model.safetensors").exists()
    assert not (run / "pictures" / "reconstruction.png").exists()
    assert len(list((run / "checkpoints").iterdir())) == 1  # checkpoint_every keeps epochs from each writing one
    assert main(["probe", "--run", str(run), "--probe", "logreg,knn", "--no-progress"]) == 0
    probe = json.loads((run / "summary.json").read_text())["probe"]
    assert probe["logreg"]["seeds"] == 2 and probe["logreg"]["acc"] > 1 / 3
    ft = tmp_path / "ft"
    assert main(["finetune", "--run", str(run), "--out", str(ft), "--epochs", "3", "--no-progress"]) == 0
    assert "test_acc" in json.loads((ft / "summary.json").read_text())


def test_cli_graphmae_graph_level_svm(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--dataset", "synthetic-graphs", "--num-graphs", "45", "--encoder", "gin",
                 "--decoder", "gin", "--norm", "batchnorm", "--num-hidden", "16", "--num-layers", "2",
                 "--batch-size", "12", "--epochs", "2", "--out", str(run), "--no-progress"]) == 0
    assert main(["probe", "--run", str(run), "--probe", "svm-cv,linear", "--probe-epochs", "5",
                 "--no-progress"]) == 0
    probe = json.loads((run / "summary.json").read_text())["probe"]
    assert 0 < probe["svm-cv"]["acc"] <= 1 and probe["svm-cv"]["folds"] >= 2


def test_cli_bad_data_path_is_one_line_error(tmp_path, capsys):
    assert main(["pretrain", "--dataset", "tudataset", "--data", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_cli_skeletonmae_pretrain_finetune_reconstruct(tmp_path):
    run = tmp_path / "run"
    tiny = ["--num-hidden", "16", "--num-layers", "2", "--temporal-dim", "32", "--temporal-depth", "1",
            "--temporal-heads", "2", "--num-train", "48", "--num-test", "24", "--frames", "12", "--batch-size", "16",
            "--no-progress"]
    assert main(["pretrain", "--method", "skeletonmae", "--epochs", "1", "--out", str(run), *tiny]) == 0
    assert (run / "pictures" / "reconstruction.png").exists()
    assert main(["finetune", "--run", str(run), "--epochs", "1", "--out", str(tmp_path / "ft"), "--batch-size", "16",
                 "--no-progress"]) == 0
    assert "test_acc" in json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert main(["reconstruct", "--run", str(run), "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").exists()


def test_cli_help_of_every_command_and_method_renders(capsys):
    for argv in (["pretrain", "--help"], ["pretrain", "--method", "skeletonmae", "--help"],
                 ["pretrain", "--preset", "cora", "--help"], ["probe", "--help"], ["finetune", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0, argv
        assert "usage" in capsys.readouterr().out


def test_skeletonmae_trains_with_two_processes(tmp_path):
    """Its fine-tuning head gets no gradient in pretraining: DDP must be told (ddp_find_unused_parameters), or the
    second step fails with 'Expected to have finished reduction in the prior iteration'."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "mae_graph.cli", "pretrain", "--method", "skeletonmae", "--nproc",
                           "2", "--num-hidden", "16", "--num-layers", "1", "--temporal-dim", "16", "--temporal-depth",
                           "1", "--temporal-heads", "2", "--frames", "8", "--num-train", "16", "--num-test", "4",
                           "--batch-size", "4", "--epochs", "1", "--max-steps", "3", "--no-progress", "--out",
                           str(run)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert json.loads((run / "summary.json").read_text())["steps"] == 2  # 16 clips, 4 per step and process


def test_import_and_help_do_not_load_pyg():
    """PyG's import loads torch._dynamo (seconds); the package registers its methods and renders --help without it."""
    import subprocess
    import sys

    code = ("import sys, mae_graph\nfrom mae_graph.cli import main\n"
            "try:\n    main(['pretrain', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', 'torch_geometric' in sys.modules, 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED False False" in out.stdout


def test_the_embedded_default_gets_its_own_schedule_and_user_data_does_not(capsys):
    import mae_core
    from mae_core.runconfig import resolve_run_config

    mae_core.registry.autoload()
    on_sbm = resolve_run_config("graphmae", domain="graph")
    on_cora = resolve_run_config("graphmae", domain="graph", dataset="planetoid")
    assert on_sbm.dataset.name == "sbm" and on_sbm.train.epochs == 3000
    assert on_cora.train.epochs == 300  # the method's own default, not the embedded run's recipe
    assert resolve_run_config("graphmae", domain="graph", overrides={"epochs": 7}).train.epochs == 7
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "(default: 3000)" in " ".join(capsys.readouterr().out.split())
