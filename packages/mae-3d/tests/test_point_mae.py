import pytest
import torch

from mae_core.errors import MaeError
from mae_core.eval import extract_features
from mae_core.eval.svm import few_shot, linear_svm
from mae_core.testing import loss_falls
from mae_3d.methods.point_mae import PointMAE, PointMAEConfig, masked_ids, num_masked


def tiny_cfg(**kw):
    base = dict(num_groups=16, group_size=16, embed_dim=48, depth=2, num_heads=2, decoder_embed_dim=48,
                decoder_depth=1, decoder_num_heads=2, pointnet_dims=[16, 32, 64], drop_path=0.0)
    base.update(kw)
    return PointMAEConfig(**base)


def _batch(ds, n=8):
    return {"points": torch.stack([ds[i]["points"] for i in range(0, len(ds), max(1, len(ds) // n))][:n])}


@pytest.mark.parametrize("mask_strategy", ["random", "block"])
def test_masking_counts_and_shapes(tiny_shapes, mask_strategy):
    torch.manual_seed(0)
    model = PointMAE(tiny_cfg(mask_strategy=mask_strategy, mask_ratio=0.6))
    out = model(_batch(tiny_shapes[0]), generator=torch.Generator().manual_seed(0))
    keep = 16 - int(0.6 * 16)  # the reference masks int(0.6 * G) = 9 of 16 groups (mae-core's int(L * 0.4) = 6 kept)
    assert keep == 7
    assert out.mask.shape == (8, 16)
    assert (out.mask.sum(1) == 16 - keep).all()
    assert out.pred.shape == (8, 16, 16 * 3) and out.target.shape == (8, 16, 16 * 3)
    assert torch.isfinite(out.loss)


def test_block_mask_hides_nearest_groups(tiny_shapes):
    model = PointMAE(tiny_cfg(mask_strategy="block"))
    pts = _batch(tiny_shapes[0])["points"]
    _, centers = model.group(pts)
    mask = model.mask_groups(centers, torch.Generator().manual_seed(3))
    for b in range(len(pts)):
        m = mask.mask[b].bool()
        # the masked groups are the ones closest to some centre: find it among the masked ones
        ok = False
        for s in m.nonzero().flatten().tolist():
            d = ((centers[b] - centers[b, s]) ** 2).sum(-1)
            if d[m].max() <= d[~m].min():
                ok = True
                break
        assert ok


def test_mask_tokens_never_enter_encoder(tiny_shapes):
    torch.manual_seed(0)
    model = PointMAE(tiny_cfg()).eval()
    pts = _batch(tiny_shapes[0])["points"]
    seen = {}
    model.encoder.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0].detach().clone()))
    neigh, centers = model.group(pts)
    mask = model.mask_groups(centers, torch.Generator().manual_seed(1))
    latent = model.encode_visible(neigh, centers, mask)
    keep = mask.num_keep
    assert seen["x"].shape == (8, keep, 48) and latent.shape == (8, keep, 48)
    # masked groups' points and the decoder's mask token have no influence on the encoder output
    noisy = neigh.clone()
    m = mask.mask.bool()
    noisy[m] = torch.randn_like(noisy[m]) * 5
    with torch.no_grad():
        model.decoder.mask_token.add_(100.0)
    assert torch.allclose(model.encode_visible(noisy, centers, mask), latent, atol=1e-6)
    # the loss only looks at masked groups
    ids = masked_ids(mask)
    assert bool(torch.gather(mask.mask, 1, ids).all())


def test_generator_makes_masks_deterministic(tiny_shapes):
    model = PointMAE(tiny_cfg())
    b = _batch(tiny_shapes[0])
    m1 = model(b, generator=torch.Generator().manual_seed(5)).mask
    m2 = model(b, generator=torch.Generator().manual_seed(5)).mask
    m3 = model(b, generator=torch.Generator().manual_seed(6)).mask
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)


@pytest.mark.parametrize("loss", ["l2", "l1"])
def test_loss_falls(tiny_shapes, loss):
    torch.manual_seed(0)
    model = PointMAE(tiny_cfg(loss=loss, augment=False))
    first, last = loss_falls(model, _batch(tiny_shapes[0]), steps=25, lr=2e-3)
    assert last < 0.7 * first


def test_too_few_points_is_one_line_error():
    model = PointMAE(tiny_cfg())
    with pytest.raises(MaeError, match="fewer than"):
        model({"points": torch.randn(2, 8, 3)})


def test_encode_and_probe_beats_chance(tiny_shapes):
    torch.manual_seed(0)
    train, test = tiny_shapes
    model = PointMAE(tiny_cfg())
    assert model.feature_dim() == 96
    xtr, ytr = extract_features(model, train, batch_size=64)
    xte, yte = extract_features(model, test, batch_size=64)
    assert xtr.shape == (len(train), 96)
    res = linear_svm(xtr, ytr, xte, yte)
    assert res["acc"] > 1.5 / train.num_classes  # 5 classes: chance 0.2


def test_few_shot_protocol():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(8).repeat_interleave(30)
    centres = torch.randn(8, 16, generator=g) * 3
    x = centres[y] + torch.randn(len(y), 16, generator=g)
    fs = few_shot(x, y, way=5, shot=10, query=20, folds=6)
    assert fs["acc"] > 95 and fs["folds"] == 6 and fs["way"] == 5
    noise = few_shot(torch.randn(len(y), 16, generator=g), y, way=5, shot=10, query=20, folds=6)
    assert noise["acc"] < 45  # chance is 20 %
    with pytest.raises(ValueError, match="only"):
        few_shot(x, y, way=9, shot=10, query=20)


def test_layer_ids():
    model = PointMAE(tiny_cfg())
    assert model.layer_id("patch_embed.first.0.weight") == 0
    assert model.layer_id("encoder.blocks.1.mlp.fc1.weight") == 2
    assert model.layer_id("decoder.head.weight") == model.num_layers()


def test_mask_count_is_int_ratio_times_groups():
    """Point-MAE's _mask_center_rand / _mask_center_block mask int(mask_ratio * G) groups."""
    assert [num_masked(g, 0.6) for g in (16, 32, 64)] == [9, 19, 38]
    assert num_masked(64, 0.75) == 48 and num_masked(10, 0.0) == 0
    with pytest.raises(MaeError, match="mask_ratio"):
        num_masked(64, 1.0)
    model = PointMAE(tiny_cfg(num_groups=32, group_size=8))
    centers = torch.randn(3, 32, 3)
    for strategy in ("random", "block"):
        model.config.mask_strategy = strategy
        assert model.mask_groups(centers, torch.Generator().manual_seed(0)).mask.sum(1).tolist() == [19] * 3


def test_pointnet_batchnorm_statistics_over_all_groups(tiny_shapes):
    """The reference embeds every group, then drops the masked tokens: the mini-PointNet's BatchNorm statistics are
    those of all B x G x M points, not of the visible groups only."""
    torch.manual_seed(0)
    model = PointMAE(tiny_cfg()).train()
    bn = model.patch_embed.first[1].bn
    bn.momentum = 1.0  # running statistics = the last batch's
    pts = _batch(tiny_shapes[0])["points"]
    neigh, centers = model.group(pts)
    mask = model.mask_groups(centers, torch.Generator().manual_seed(0))
    model.encode_visible(neigh, centers, mask)
    with torch.no_grad():
        h = model.patch_embed.first[0](neigh.reshape(-1, 3))  # first Linear on every point of every group
        vis = model.patch_embed.first[0](neigh[~mask.mask.bool()].reshape(-1, 3))
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var(0, unbiased=True), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(bn.running_mean, vis.mean(0), atol=1e-3)


def test_reference_finetune_head_cls_and_max_through_bn_mlp(tiny_shapes):
    """Pool cls+max: a cls token and position prepended to all groups, [cls, max over groups] -> Linear-BN-ReLU-
    Dropout(0.5) x 2 (256 wide), as the reference PointTransformer's cls_head_finetune (its last Linear is mae-core's
    head)."""
    from mae_core.eval import Classifier

    torch.manual_seed(0)
    model = PointMAE(tiny_cfg())
    head = model.cls_head
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout"]
    assert head[0].in_features == 2 * 48 and head[0].out_features == head[4].out_features == 256
    assert head[3].p == head[7].p == 0.5
    clf = Classifier(model, num_classes=5, pool="cls+max")
    assert clf.head.in_features == 256 == model.feature_dim("cls+max")
    # the reference's last Linear reads the BN-ReLU output directly: no LayerNorm in between (other pools keep it)
    assert isinstance(clf.fc_norm, torch.nn.Identity)
    assert isinstance(Classifier(model, num_classes=5, pool="max+mean").fc_norm, torch.nn.LayerNorm)
    batch = _batch(tiny_shapes[0])
    model.eval()
    with torch.no_grad():
        neigh, centers = model.group(batch["points"])
        b = neigh.shape[0]
        x = model.encoder(torch.cat([model.cls_token.expand(b, -1, -1), model.patch_embed(neigh)], 1),
                          torch.cat([model.cls_pos.expand(b, -1, -1), model.pos_embed(centers)], 1))
        assert x.shape == (b, 17, 48)
        want = head(torch.cat([x[:, 0], x[:, 1:].max(1).values], -1))
        assert torch.allclose(model.encode(batch, pool="cls+max"), want, atol=1e-6)
        before = model.encode(batch, pool="cls+max")
        model.cls_token.add_(torch.randn_like(model.cls_token))  # the cls token takes part
        assert not torch.allclose(model.encode(batch, pool="cls+max"), before, atol=1e-4)
    # the pretraining loss never touches the fine-tuning parts; fine-tuning trains them
    model.train()
    model(batch, generator=torch.Generator().manual_seed(0)).loss.backward()
    assert all(p.grad is None for p in [model.cls_token, model.cls_pos, *head.parameters()])
    assert model.ddp_find_unused_parameters
    clf.train()
    clf({**batch, "label": torch.arange(8) % 5}).loss.backward()
    assert model.cls_token.grad is not None and head[0].weight.grad is not None
    assert model.layer_id("cls_token") == 0 and model.layer_id("cls_head.0.weight") == model.num_layers()


def test_finetune_defaults_to_the_reference_head():
    from mae_core import registry
    from mae_core.workflows import finetune_config

    for method in ("point-mae", "point-cmae"):
        assert finetune_config(registry.get_method(method), {}).pool == "cls+max"
        assert finetune_config(registry.get_method(method), {"pool": "max+mean"}).pool == "max+mean"
