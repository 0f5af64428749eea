"""The prototypical probe (mae-core, registered as ``prototypical``) on audio token grids."""
import pytest
import torch

from mae_core.cli import PROBES
from mae_core.eval.prototypical import PrototypicalHead, asymmetric_loss, prototypical_probe


def test_head_shapes_weights_and_init():
    torch.manual_seed(0)
    head = PrototypicalHead(dim=16, num_classes=3, num_prototypes=5)
    tokens = torch.randn(2, 8 * 4, 16)
    logits, maps = head(tokens, (8, 4), return_maps=True)
    assert logits.shape == (2, 3) and maps.shape == (2, 3, 5, 16, 8)  # upsampled x2
    assert (maps >= 0).all() and (maps <= 1 + 1e-5).all()  # ReLU(cosine)
    assert torch.equal(head.weight, torch.ones(3, 5)) and torch.equal(head.bias, torch.full((3,), -2.0))
    expected = maps.flatten(3).amax(-1).sum(-1) - 2.0
    assert torch.allclose(logits, expected, atol=1e-5)
    # negative class weights cannot make a prototype count against its class: ReLU(w)
    with torch.no_grad():
        head.weight[0] = -3.0
    assert torch.allclose(head(tokens, (8, 4))[:, 0], torch.full((2,), -2.0))
    with pytest.raises(Exception, match="grid"):
        head(tokens, (5, 5))


def test_orthogonality_term():
    head = PrototypicalHead(dim=6, num_classes=2, num_prototypes=3)
    with torch.no_grad():
        head.prototypes.copy_(torch.eye(6)[:6].reshape(2, 3, 6) * 4.0)  # orthogonal inside each class
    assert float(head.orthogonality().detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        head.prototypes[0] = torch.tensor([1.0, 0, 0, 0, 0, 0])  # three identical prototypes in class 0
    # gram of class 0 is all ones: 6 off-diagonal entries of 1
    assert float(head.orthogonality().detach()) == pytest.approx(6.0, abs=1e-5)


def test_asymmetric_loss():
    y = torch.tensor([[1.0, 0.0, 0.0]])
    good = asymmetric_loss(torch.tensor([[5.0, -5.0, -5.0]]), y)
    bad = asymmetric_loss(torch.tensor([[-5.0, 5.0, 5.0]]), y)
    assert good < 0.01 < bad
    # negatives below the clip margin cost nothing
    assert float(asymmetric_loss(torch.tensor([[20.0, -3.5, -3.5]]), y)) == pytest.approx(0.0, abs=1e-6)


def _toy(n, grid=(4, 4), dim=32, classes=3, seed=0):
    """Class c puts its own feature vector at one random location of the grid; elsewhere noise."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.arange(n) % classes
    x = torch.randn(n, grid[0] * grid[1], dim, generator=g)
    loc = torch.randint(0, grid[0] * grid[1], (n,), generator=g)
    x[torch.arange(n), loc] += keys[y]
    return x, y


def test_probe_learns_and_is_registered():
    assert "prototypical" in PROBES
    xtr, ytr = _toy(120)
    xte, yte = _toy(60, seed=1)
    res = prototypical_probe(xtr, ytr, xte, yte, (4, 4), 3, num_prototypes=4, epochs=5, batch_size=32)
    assert res["acc"] > 0.8 and res["loss_last_epoch"] < res["loss_first_epoch"]
    ml = torch.nn.functional.one_hot(ytr, 3).float()
    res = prototypical_probe(xtr, ml, xte, torch.nn.functional.one_hot(yte, 3).float(), (4, 4), 3,
                             num_prototypes=4, epochs=5, batch_size=32, multilabel=True)
    assert res["auc"] > 0.8
