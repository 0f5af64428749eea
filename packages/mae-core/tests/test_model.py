import torch

from mae_core.checkpoint import from_pretrained, save_pretrained
from mae_core.data import ShapesConfig, SyntheticShapes
from mae_core.losses import masked_mse, normalize_patches
from mae_core.masking import random_masking
from mae_core.models.image_mae import ImageMAE
from mae_core.registry import build_model

from mae_core.testing import tiny_image_cfg as tiny_cfg


def test_masked_mse_ignores_visible_tokens():
    pred = torch.randn(2, 8, 5)
    target = torch.randn(2, 8, 5)
    mask = torch.zeros(2, 8)
    mask[:, :3] = 1
    loss = masked_mse(pred, target, mask)
    pred2 = pred.clone()
    pred2[:, 3:] += 100.0  # change only visible-token predictions
    assert torch.allclose(loss, masked_mse(pred2, target, mask))
    expected = ((pred[:, :3] - target[:, :3]) ** 2).mean()
    assert torch.allclose(loss, expected)


def test_model_loss_only_depends_on_masked_predictions(tiny_model):
    x = torch.randn(2, 3, 16, 16)
    out = tiny_model({"image": x}, generator=torch.Generator().manual_seed(0))
    target = normalize_patches(tiny_model.target({"image": x}))
    pred = out.pred.detach().clone()
    pred[out.mask == 0] = 1e3
    assert torch.allclose(masked_mse(pred, target, out.mask), out.loss.detach(), atol=1e-5)
    assert out.mask.sum(1).eq(12).all()  # 16 tokens, ratio 0.75


def test_normalize_patches_known_values():
    t = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    n = normalize_patches(t, eps=0.0)
    assert torch.allclose(n, (t - 2.5) / torch.tensor([1.0, 2.0, 3.0, 4.0]).std())
    # per-channel (VideoMAE): values laid out (pixel, channel)
    v = torch.tensor([[[0.0, 10.0, 2.0, 30.0]]])  # pixels (0, 10), (2, 30)
    nc = normalize_patches(v, eps=0.0, channels=2, per_channel=True)
    assert torch.allclose(nc, torch.tensor([[[-0.7071, -0.7071, 0.7071, 0.7071]]]), atol=1e-4)


def test_encoder_sees_only_visible_tokens(tiny_model):
    seen = {}
    hook = tiny_model.encoder.blocks[0].register_forward_hook(lambda m, i, o: seen.update(n=i[0].shape[1]))
    tiny_model({"image": torch.randn(2, 3, 16, 16)})
    hook.remove()
    assert seen["n"] == 1 + 4  # cls + 25 % of 16 patches


def test_loss_falls_over_30_steps():
    torch.manual_seed(0)
    model = ImageMAE(tiny_cfg(img_size=16))
    ds = SyntheticShapes(ShapesConfig(image_size=16, num_train=64, num_test=8))
    x = ds.images[:64]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        out = model({"image": x}, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_encode_shapes(tiny_model):
    x = torch.randn(3, 3, 16, 16)
    # images pool the mean of the patch tokens by default; cls + mean on request
    assert tiny_model.encode({"image": x}).shape == (3, 32) and tiny_model.feature_dim() == 32
    assert tiny_model.encode({"image": x}, pool="cls+mean").shape == (3, 64)
    assert tiny_model.feature_dim("cls+mean") == 64
    feats = tiny_model.forward_features({"image": x})
    assert feats.shape == (3, 17, 32)
    assert torch.allclose(tiny_model.encode({"image": x}), feats[:, 1:].mean(1), atol=1e-6)
    assert torch.allclose(tiny_model.encode({"image": x}, pool="cls"), feats[:, 0], atol=1e-6)
    # a different input size uses a recomputed position embedding
    assert tiny_model.encode({"image": torch.randn(1, 3, 24, 16)}, pool="cls+mean").shape == (1, 64)


def test_checkpoint_round_trip(tmp_path, tiny_model):
    tiny_model.method_name = "image-mae"
    save_pretrained(tiny_model, tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    loaded = from_pretrained(tmp_path)
    x = torch.randn(2, 3, 16, 16)
    tiny_model.eval(), loaded.eval()
    assert torch.equal(tiny_model.encode({"image": x}), loaded.encode({"image": x}))
    # nothing pickled: the weights file is safetensors (8-byte header length, then JSON)
    raw = (tmp_path / "model.safetensors").read_bytes()
    assert raw[8:9] == b"{"


def test_build_model_from_registry():
    import mae_core.image  # noqa: F401
    m = build_model("image-mae", {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2})
    assert isinstance(m, ImageMAE)


def test_block_mask_strategy(tiny_model):
    import dataclasses
    m = ImageMAE(dataclasses.replace(tiny_cfg(), mask_strategy="block"))
    out = m({"image": torch.randn(2, 3, 16, 16)})
    assert out.mask.sum(1).eq(12).all()
