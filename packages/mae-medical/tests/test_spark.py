"""SparK: the sparse wrappers (masked positions stay zero through every layer; BatchNorm statistics of the visible
positions only), the loss, the ablations, the CLI."""
import pytest
import torch
import torch.nn as nn

from mae_medical.methods.spark import SparK, SparKConfig, resnet_stages
from mae_medical.sparse_cnn import SparseBatchNorm, SparseContext, sparsify


def monai_resnet_3d():
    from monai.networks.nets import ResNet

    return ResNet("basic", [1, 1, 1, 1], [4, 8, 8, 16], spatial_dims=3, n_input_channels=2, conv1_t_stride=1,
                  no_max_pool=True, feed_forward=False)


def torchvision_resnet18():
    import torchvision

    cnn = torchvision.models.resnet18(weights=None)
    cnn.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    return cnn


def leaked(cnn, x, ctx):
    """Run the four stages on the masked input; for every module output with spatial axes, the largest value at a
    masked position."""
    worst = {}

    def hook(name):
        def fn(module, inputs, out):
            if isinstance(out, torch.Tensor) and out.ndim == x.ndim:
                worst[name] = float((out * ~ctx.at(out.shape[2:])).abs().max())
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in cnn.named_modules() if n]
    with torch.no_grad():
        resnet_stages(cnn, x * ctx.at(x.shape[2:]))
    for h in handles:
        h.remove()
    return worst


@pytest.mark.parametrize("build,shape,grid", [(torchvision_resnet18, (2, 1, 64, 64), (2, 2)),
                                              (monai_resnet_3d, (2, 2, 16, 16, 16), (2, 2, 2))])
def test_masked_positions_stay_zero_through_every_layer(build, shape, grid):
    torch.manual_seed(0)
    x = torch.randn(shape)
    active = torch.zeros(shape[0], 1, *grid, dtype=torch.bool)
    active.view(shape[0], -1)[:, ::2] = True  # half of the cells visible, the same pattern in both samples
    ctx = SparseContext()
    dense = build().train()
    ctx.active = active
    assert max(leaked(dense, x, ctx).values()) > 0  # the dense network spreads into the masked cells
    sparse = sparsify(build().train(), ctx)
    worst = leaked(sparse, x, ctx)
    assert len(worst) >= 20 and max(worst.values()) == 0.0, {k: v for k, v in worst.items() if v}
    # the wrapped network keeps its parameter / buffer names (a dense copy loads its weights)
    assert set(sparse.state_dict()) == set(build().state_dict())
    ctx.active = None  # no mask: dense computation with the same modules
    with torch.no_grad():
        assert torch.count_nonzero(resnet_stages(sparse.eval(), x)[0]) > 0


def test_sparse_batchnorm_uses_the_visible_positions_only():
    torch.manual_seed(0)
    ctx = SparseContext()
    bn = SparseBatchNorm(3, ctx, momentum=0.1).train()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.randn(2, 3, 8, 8) * 3 + 1
    ctx.active = torch.rand(2, 1, 4, 4) < 0.4
    keep = ctx.at((8, 8))[:, 0]
    out = bn(x)
    rows = x.permute(0, 2, 3, 1)[keep]  # (N_visible, C)
    mean, var = rows.mean(0), rows.var(0, unbiased=False)
    expect = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + bn.eps) * bn.weight[:, None, None] \
        + bn.bias[:, None, None]
    k = keep[:, None].expand_as(x)
    assert torch.allclose(out[k], expect[k], atol=1e-5)
    assert float(out[~k].abs().max().detach()) == 0.0
    assert torch.allclose(bn.running_mean, 0.1 * mean, atol=1e-6)
    assert torch.allclose(bn.running_var, 0.9 + 0.1 * rows.var(0, unbiased=True), atol=1e-5)
    # not the statistics of all positions
    assert not torch.allclose(bn.running_mean, 0.1 * x.mean((0, 2, 3)), atol=1e-3)


def tiny(**kw):
    base = dict(spatial_dims=2, in_chans=1, img_size=16, widths=[4, 8, 8, 16], decoder_width=16)
    base.update(kw)
    torch.manual_seed(0)
    return SparK(SparKConfig(**base))


def test_loss_is_mse_of_masked_cells_against_normalised_patches():
    model = tiny()
    x = torch.randn(3, 1, 16, 16)
    out = model({"image": x}, generator=torch.Generator().manual_seed(0))
    assert model.stride == 8 and out.mask.shape == (3, 4)
    assert bool((out.mask.sum(1) == 4 - round(4 * 0.4)).all())
    patches = torch.stack([torch.stack([x[i, 0, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8].reshape(-1)
                                        for r in range(2) for c in range(2)]) for i in range(3)])
    mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)  # unbiased, as the reference
    target = (patches - mean) / torch.sqrt(var + 1e-6)
    assert torch.allclose(out.target, target, atol=1e-5)
    err = ((out.pred - target) ** 2).mean(-1)
    assert torch.allclose(out.loss, (err * out.mask).sum() / out.mask.sum(), atol=1e-6)


def test_ablations_dense_encoder_and_single_scale_decoder():
    dense = tiny(sparse=False)
    assert not any(isinstance(m, SparseBatchNorm) for m in dense.encoder.modules())
    calls = []
    single = tiny(decoder_scales=1)
    for i, p in enumerate(single.densify_projs):
        p.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    single({"image": torch.randn(2, 1, 16, 16)}, generator=torch.Generator().manual_seed(0))
    assert calls == [0]
    full = tiny()
    assert any(isinstance(m, SparseBatchNorm) for m in full.encoder.modules())


def test_3d_reconstruction_and_encode():
    model = tiny(spatial_dims=3, in_chans=2, modality_names=["t1", "flair"]).eval()
    b = {"t1": torch.randn(2, 1, 16, 16, 16), "flair": torch.randn(2, 1, 16, 16, 16)}
    rec = model.reconstruct(b, generator=torch.Generator().manual_seed(0))
    x = torch.cat([b["t1"], b["flair"]], 1)
    keep = rec["masked"] != 0
    assert rec["reconstruction"].shape == x.shape and torch.equal(rec["reconstruction"][keep], x[keep])
    assert model.encode(b).shape == (2, model.feature_dim())


def test_cli_pretrain_2d(tmp_path):
    from mae_medical.cli import main

    run = tmp_path / "run"
    assert main(["pretrain", "--method", "spark", "--image-size", "16", "--widths", "4", "8", "8", "16",
                 "--decoder-width", "16", "--num-train", "8", "--num-test", "4", "--epochs", "1", "--batch-size", "4",
                 "--no-progress", "--device", "cpu", "--out", str(run)]) == 0
    assert (run / "pictures" / "reconstruction.png").exists()
