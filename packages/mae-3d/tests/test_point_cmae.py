import torch

from mae_core.testing import loss_falls
from mae_3d.methods.point_cmae import PointCMAE, PointCMAEConfig, contrastive_term


def tiny_cfg(**kw):
    base = dict(num_groups=16, group_size=16, embed_dim=48, depth=2, num_heads=2, decoder_embed_dim=48,
                decoder_depth=1, decoder_num_heads=2, pointnet_dims=[16, 32, 64], drop_path=0.0, proj_dim=32)
    base.update(kw)
    return PointCMAEConfig(**base)


def test_contrastive_term_is_the_reference_formula():
    """Reference: mean over the rows i masked in both views and every column j of view 2 of 1 - cos(f1_i, f2_j)
    (+ 1e-8). Hand-computed on 3 tokens in 2-D."""
    f1 = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], requires_grad=True)
    f2 = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]]], requires_grad=True)
    # only token 0 masked in both: 1 - cos((1,0), .) = 0, 1, 2 -> mean 1
    t = contrastive_term(f1, f2, torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0]]))
    assert abs(float(t.detach()) - 1.0) < 1e-6
    # tokens 1 and 2: (1 + 0 + 1) + (3 - 1/sqrt 2) over 2 rows x 3 columns
    t = contrastive_term(f1, f2, torch.ones(1, 3), torch.tensor([[0.0, 1.0, 1.0]]))
    assert abs(float(t.detach()) - (2 + 3 - 2 ** -0.5) / 6) < 1e-6
    # no stop-gradient: both views get gradients; view 1 only on the doubly-masked rows, view 2 on every token
    t.backward()
    assert (f1.grad[0, 0] == 0).all() and f1.grad[0, 1:].abs().sum() > 0
    assert (f2.grad[0].abs().sum(-1) > 0).all()
    # no token masked in both views -> 0
    assert float(contrastive_term(f1, f2, torch.tensor([[1.0, 0, 0]]), torch.tensor([[0.0, 1, 1]])).detach()) == 0.0


def test_reference_loss_and_no_projector(tiny_shapes):
    """loss = 1000 (CD1 + CD2) + L_con on the raw (pre-norm) decoder features; no projector or predictor."""
    torch.manual_seed(0)
    model = PointCMAE(tiny_cfg(augment=False))
    assert not hasattr(model.decoder, "projector") and not hasattr(model.decoder, "predictor")
    batch = {"points": torch.stack([tiny_shapes[0][i]["points"] for i in range(0, 48, 6)])}
    out = model(batch, generator=torch.Generator().manual_seed(0))
    want = 1000 * 2 * out.metrics["chamfer"] + out.metrics["contrastive"]
    assert abs(float(out.loss.detach()) - want) < 1e-3 * abs(want)
    # the decoder's features are the last block's output before its final norm; the points come from the normed one
    neigh, centers = model.group(batch["points"])
    mask = model.mask_groups(centers, torch.Generator().manual_seed(1))
    dec = model.decoder.a
    feats, pred = dec(model.encode_visible(neigh, centers, mask), centers, mask.ids_restore)
    assert torch.allclose(dec.head(dec.blocks.norm(feats)), pred, atol=1e-5)
    assert not torch.allclose(dec.blocks.norm(feats), feats, atol=1e-2)
    # the earlier variant stays available behind a flag
    old = PointCMAE(tiny_cfg(augment=False, contrastive="simsiam", recon_weight=1.0, contrastive_weight=0.1))
    assert hasattr(old.decoder, "projector")
    assert torch.isfinite(old(batch, generator=torch.Generator().manual_seed(0)).loss)


def test_two_independent_masks_and_loss_falls(tiny_shapes):
    torch.manual_seed(0)
    model = PointCMAE(tiny_cfg(augment=False))
    batch = {"points": torch.stack([tiny_shapes[0][i]["points"] for i in range(0, 48, 6)])}
    out = model(batch, generator=torch.Generator().manual_seed(0))
    m1, m2 = out.mask, out.extra["mask2"]
    assert (m1.sum(1) == m2.sum(1)).all() and not torch.equal(m1, m2)
    assert out.metrics["doubly_masked"] > 0
    first, last = loss_falls(model, batch, steps=20, lr=2e-3)
    assert last < 0.8 * first


def test_finetune_freezes_both_decoders():
    from mae_core.eval import Classifier

    clf = Classifier(PointCMAE(tiny_cfg()), num_classes=3)
    assert not any(p.requires_grad for p in clf.backbone.decoder.parameters())  # kept (the run reloads), frozen
    logits = clf.logits({"points": torch.randn(2, 64, 3)})
    assert logits.shape == (2, 3)
