import torch

from mae_core.testing import loss_falls
from mae_3d.methods.point_cmae import PointCMAE, PointCMAEConfig, contrastive_term


def tiny_cfg(**kw):
    base = dict(num_groups=16, group_size=16, embed_dim=48, depth=2, num_heads=2, decoder_embed_dim=48,
                decoder_depth=1, decoder_num_heads=2, pointnet_dims=[16, 32, 64], drop_path=0.0, proj_dim=32)
    base.update(kw)
    return PointCMAEConfig(**base)


def test_contrastive_term_uses_only_doubly_masked_tokens():
    torch.manual_seed(0)
    model = PointCMAE(tiny_cfg())
    dec = model.decoder
    f1 = torch.randn(4, 16, 48, requires_grad=True)
    f2 = torch.randn(4, 16, 48, requires_grad=True)
    m1 = (torch.rand(4, 16) < 0.6).float()
    m2 = (torch.rand(4, 16) < 0.6).float()
    both = (m1 * m2).bool()
    assert both.any() and (~both).any()
    term = contrastive_term(f1, f2, m1, m2, dec.projector, dec.predictor)
    term.backward()
    g1, g2 = f1.grad.abs().sum(-1), f2.grad.abs().sum(-1)
    assert (g1[~both] == 0).all() and (g2[~both] == 0).all()
    assert (g1[both] > 0).all() and (g2[both] > 0).all()
    # changing the features of tokens not masked in both views leaves the term unchanged
    with torch.no_grad():
        f1b, f2b = f1.clone(), f2.clone()
        f1b[~both] = torch.randn_like(f1b[~both])
        f2b[~both] = 0
        assert torch.allclose(contrastive_term(f1b, f2b, m1, m2, dec.projector, dec.predictor), term)
        # diagonal only: identical features at token i in both views give the minimum of the positive term
        assert contrastive_term(f1, f1, m1, m1, dec.projector, dec.predictor) <= term + 1e-6


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
