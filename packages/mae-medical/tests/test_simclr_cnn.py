"""simclr-cnn: the NT-Xent loss on hand-made projections, the loss of forward against a loop over the 2B views, the
encoder being spark's CNN (weights interchangeable, same features), the views being mae-core's, the CLI run."""
import math

import pytest
import torch

from mae_core.contrastive import nt_xent, simclr_pair
from mae_core.errors import MaeError
from mae_medical.methods.simclr_cnn import SimCLRCNN, SimCLRCNNConfig
from mae_medical.methods.spark import SparK, SparKConfig


def tiny(**kw):
    base = dict(in_chans=1, img_size=16, widths=[4, 8, 8, 16], proj_hidden_dim=16, proj_dim=8)
    base.update(kw)
    torch.manual_seed(0)
    return SimCLRCNN(SimCLRCNNConfig(**base))


def test_nt_xent_on_hand_made_projections():
    e = torch.eye(2)
    # positives identical, every negative orthogonal: each of the 4 views scores 1 (positive), 0, 0 (negatives)
    loss, acc = nt_xent(e, e.clone(), temperature=1.0)
    assert math.isclose(float(loss), math.log(1 + 2 / math.e), rel_tol=1e-6) and acc == 1.0
    # positives orthogonal, the other sample's second view aligned: scores 0 (positive), 1 / 0.5, 0
    loss, acc = nt_xent(e, e.flip(0), temperature=0.5)
    assert math.isclose(float(loss), math.log(2 + math.e ** 2), rel_tol=1e-6) and acc == 0.0
    # the scale of a projection does not matter (cosine similarities)
    assert math.isclose(float(nt_xent(3 * e, e, 1.0)[0]), math.log(1 + 2 / math.e), rel_tol=1e-6)


def test_forward_is_nt_xent_over_the_2b_views():
    model = tiny()
    x = torch.randn(3, 1, 16, 16)
    out = model({"image": x}, generator=torch.Generator().manual_seed(0))
    views = model.views(x, torch.Generator().manual_seed(0))
    assert torch.equal(views, simclr_pair(x, model.config, torch.Generator().manual_seed(0)))  # mae-core's views
    z = torch.nn.functional.normalize(model.project(views), dim=1)
    t, n = model.config.temperature, 3
    terms = []
    for i in range(2 * n):  # view i: positive (i + n) mod 2n, denominator every other view
        pos = (i + n) % (2 * n)
        others = [j for j in range(2 * n) if j != i]
        terms.append(-(z[i] @ z[pos]) / t + torch.logsumexp(torch.stack([z[i] @ z[j] / t for j in others]), 0))
    assert torch.allclose(out.loss, torch.stack(terms).mean(), atol=1e-5)
    assert 0.0 <= out.metrics["pos_top1"] <= 1.0


def test_encoder_is_sparks_cnn():
    model = tiny().eval()
    spark = SparK(SparKConfig(spatial_dims=2, in_chans=1, img_size=16, widths=[4, 8, 8, 16], decoder_width=16)).eval()
    enc = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    assert set(enc) == {k for k in spark.state_dict() if k.startswith("encoder.")}
    spark.load_state_dict(enc, strict=False)
    b = {"image": torch.randn(2, 1, 16, 16)}
    with torch.no_grad():
        assert torch.allclose(model.encode(b), spark.encode(b), atol=1e-6)
    assert model.feature_dim() == spark.feature_dim() == 16
    assert [model.layer_id(n) for n in ("encoder.conv1.weight", "encoder.layer3.0.conv1.weight",
                                        "projector.fc1.weight")] == [0, 3, 5]


def test_bad_input_is_named():
    with pytest.raises(MaeError, match="simclr-cnn: expected images"):
        tiny().encode({"image": torch.randn(2, 3, 16, 16)})


def test_cli_pretrain_writes_the_views_picture(tmp_path):
    from mae_medical.cli import main

    run = tmp_path / "run"
    assert main(["pretrain", "--method", "simclr-cnn", "--image-size", "16", "--widths", "4", "8", "8", "16",
                 "--num-train", "8", "--num-test", "4", "--epochs", "1", "--batch-size", "4", "--no-progress",
                 "--device", "cpu", "--out", str(run)]) == 0
    assert (run / "pictures" / "views.png").exists()
