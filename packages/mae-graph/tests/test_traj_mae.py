"""traj-mae: the winner-take-all loss with the least-used-mode term, the 50 % polyline drop, the map loss against a
loop over polylines, the prediction metrics, the CSV reader and the traj-predict command."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mae_core
from mae_core.data.utils import collate_dicts
from mae_core.errors import ConfigError
from mae_core.testing import single_thread

from mae_graph.data.driving import generate_scene, read_scene_csv, vectorize, write_scene_csv
from mae_graph.methods.traj_mae import drop_polylines, winner_take_all
from mae_graph.predict import trajectory_metrics


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def tiny():
    ds = mae_core.create_dataset("driving-scenes", "train", domain="graph", num_train=6, num_test=2, max_agents=3,
                                 max_lanes=6)
    torch.manual_seed(0)
    model = mae_core.create_model("traj-mae", domain="graph", dataset=ds, hidden=16, subgraph_depth=1)
    return model, collate_dicts([ds[i] for i in range(6)])


def test_winner_take_all_by_hand():
    losses = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.2, 4.0], [3.0, 1.0, 2.0], [2.0, 3.0, 0.1]], requires_grad=True)
    out, count = winner_take_all(losses, 0.05)
    # row 0: mode 0 wins, counts (1, 0, 0): + 0.05 x mode 1 (first unused); row 1: mode 1 wins, (1, 1, 0): + 0.05 x
    # mode 2; row 2: mode 1, (1, 2, 0): + 0.05 x mode 2; row 3: mode 2, (1, 2, 1): every mode used, no extra term
    assert torch.allclose(out, torch.tensor([1.0 + 0.1, 0.2 + 0.2, 1.0 + 0.1, 0.1]))
    assert count.tolist() == [1, 2, 1]
    out.sum().backward()
    assert torch.allclose(losses.grad, torch.tensor([[1, 0.05, 0], [0, 1, 0.05], [0, 1, 0.05], [0, 0, 1]]))


def test_trajectory_task_uses_winner_take_all_of_the_focal_history(tiny):
    model, batch = tiny
    model.train()
    r = model.pretext(batch, torch.Generator().manual_seed(0), task="traj")
    assert r["drop"][:, 0].all() and not r["drop"][:, 1:].any()
    vm = batch["vector_mask"][:, 0]
    x = batch["vectors"][:, 0, :, :4] / model.config.coord_scale
    # rotation is on in training: compare in the model's rotated frame via the targets it gathered
    for i in range(len(vm)):
        n = int(vm[i].sum())
        tgt = r["target"][i, :n]
        assert torch.allclose(tgt.norm(dim=-1), x[i][vm[i]].norm(dim=-1), atol=1e-5)  # a rotation keeps lengths
        per_mode = (r["pred_traj"][i, :n] - tgt[:, None]).abs().mean(-1).mean(0)
        assert torch.allclose(per_mode, r["mode_losses"][i], atol=1e-6)
    assert torch.allclose(r["loss"], winner_take_all(r["mode_losses"], 0.05)[0], atol=1e-6)


def test_half_the_non_focal_polylines_are_dropped():
    pm = torch.zeros(4, 12, dtype=torch.bool)
    for i, n in enumerate([12, 10, 5, 2]):
        pm[i, :n] = True
    drop = drop_polylines(pm, 0.5, torch.Generator().manual_seed(0))
    # n - 1 non-focal polylines, int((n - 1) * 0.5) kept: 11 -> 6 dropped, 9 -> 5, 4 -> 2, 1 -> 1
    assert drop.sum(1).tolist() == [6, 5, 2, 1]
    assert not drop[:, 0].any() and not (drop & ~pm).any()


def test_map_task_drops_half_and_its_loss_averages_per_polyline(tiny):
    model, batch = tiny
    model.eval()
    r = model.pretext(batch, torch.Generator().manual_seed(1), task="map", rotate=False)
    pm, vm = batch["polyline_mask"], batch["vector_mask"]
    n = pm.sum(1) - 1
    assert r["drop"].sum(1).tolist() == (n - (n.double() * 0.5).long()).tolist()
    assert not r["drop"][:, 0].any()
    for i in range(len(pm)):  # reference path: a loop over the dropped polylines
        polys = r["drop"][i].nonzero().squeeze(1).tolist()
        ids, ok = r["ids"][i], r["qvalid"][i]
        per_poly = []
        for p in polys:
            sel = ok & (ids // vm.shape[2] == p)
            assert int(sel.sum()) == int(vm[i, p].sum())
            tgt = batch["vectors"][i, p][vm[i, p]][:, :4] / model.config.coord_scale
            assert torch.allclose(r["target"][i][sel], tgt)
            per_poly.append((r["pred_map"][i][sel] - tgt).abs().mean())
        assert torch.allclose(r["loss"][i], torch.stack(per_poly).mean(), atol=1e-6)


def test_metrics_on_known_values():
    pred = torch.tensor([[[[0.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [3.0, 0.0]]],
                         [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    fut = torch.tensor([[[0.0, 0.0], [3.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]]])
    m = trajectory_metrics(pred, fut, 2.0)
    # sample 0: ADE (1, 0.5), FDE (2, 0): best of each by itself; sample 1: ADE 1.5, FDE 3 (a miss)
    assert m == pytest.approx({"minADE": 1.0, "minFDE": 1.5, "MR": 0.5})


def test_csv_round_trip_and_one_line_errors(tmp_path):
    focal, others, lanes = generate_scene(np.random.default_rng(3), False)
    others[0][:5] = np.nan  # an agent seen late
    write_scene_csv(tmp_path / "a.csv", focal, others)
    f2, o2 = read_scene_csv(tmp_path / "a.csv")
    a, b = vectorize(focal, others, lanes, 4, 8, 60.0), vectorize(f2, o2, lanes, 4, 8, 60.0)
    assert torch.equal(a["vector_mask"], b["vector_mask"])
    assert torch.allclose(a["vectors"], b["vectors"], atol=1e-3) and torch.allclose(a["future"], b["future"], atol=1e-3)
    text = (tmp_path / "a.csv").read_text()
    bad = {"nocol.csv": text.replace("OBJECT_TYPE", "KIND"), "noagent.csv": text.replace("AGENT", "OTHERS"),
           "nan.csv": text.replace(text.splitlines()[3].split(",")[3], "abc", 1)}
    for name, body in bad.items():
        (tmp_path / name).write_text(body)
        with pytest.raises(ConfigError, match=name) as e:
            read_scene_csv(tmp_path / name)
        assert "\n" not in str(e.value)


def test_traj_predict_command(tmp_path, tiny):
    from mae_graph.cli import main

    model, _ = tiny
    model.save_pretrained(tmp_path / "pre")
    out = tmp_path / "ft"
    assert main(["traj-predict", "--run", str(tmp_path / "pre"), "--out", str(out), "--num-train", "8",
                 "--num-test", "4", "--epochs", "1", "--batch-size", "4"]) == 0
    res = json.loads((out / "summary.json").read_text())
    assert set(res) >= {"minADE", "minFDE", "MR"}
    assert res["steps"] == 2 and res["train_scenes"] == 8  # 8 scenes / batch 4, one epoch, through the core trainer
    assert res["minADE"] > 0 and res["minFDE"] > 0 and 0 <= res["MR"] <= 1
    assert (out / "pictures" / "predictions.png").stat().st_size > 0
    assert main(["traj-predict", "--out", str(out), "--epochs", "0", "--scratch"]) == 2


def test_finetune_prediction_is_the_core_trainer_over_the_prediction_loss(tiny):
    import copy

    from mae_graph.data.driving import DrivingScenesConfig, make_driving_scenes
    from mae_graph.predict import PredictionObjective, finetune_prediction

    model, batch = tiny
    obj = PredictionObjective(model)
    torch.manual_seed(0)
    assert torch.equal(obj(batch).loss, (torch.manual_seed(0), model.prediction_loss(batch))[1])
    cfg = DrivingScenesConfig(num_train=6, num_test=3, seed=5, max_agents=3, max_lanes=6)
    train, test = make_driving_scenes(cfg, "train"), make_driving_scenes(cfg, "test")
    runs = [finetune_prediction(copy.deepcopy(model), train, test, epochs=2, batch_size=4, seed=3) for _ in range(2)]
    assert runs[0]["steps"] == 4  # 6 scenes: batches of 4 and 2 (the last one kept), two epochs
    assert runs[0]["minADE"] == runs[1]["minADE"]  # the trainer's seed fixes the order and the result


def test_pretrain_cli_writes_the_picture(tmp_path):
    from mae_graph.cli import main

    out = tmp_path / "pre"
    assert main(["pretrain", "--method", "traj-mae", "--out", str(out), "--num-train", "8", "--num-test", "4",
                 "--max-agents", "2", "--max-lanes", "4", "--epochs", "1", "--batch-size", "4", "--hidden", "16",
                 "--subgraph-depth", "1", "--no-progress"]) == 0
    assert (out / "pictures" / "pretext-reconstruction.png").stat().st_size > 0


def test_the_released_decoder_mask_leaves_the_encoder_without_gradient(tiny):
    model, batch = tiny
    model.train()
    for context, reaches in ((True, True), (False, False)):
        model.config.decoder_context = context
        model.zero_grad()
        model(batch, generator=torch.Generator().manual_seed(0)).loss.backward()
        g = sum(float(p.grad.abs().sum()) for p in model.subgraph.parameters() if p.grad is not None)
        assert (g > 0) == reaches
    model.config.decoder_context = True
