import torch

from mae_core.testing import loss_falls
from mae_video.data.synthetic import MovingShapes
from mae_video.methods.cropmae import CropMAE, crop_resize, random_boxes
from mae_video.methods.siammae import SiamMAE
from mae_video.testing import tiny_clips_cfg, tiny_cropmae_cfg, tiny_siammae_cfg


def _clips(n=8, frames=4):
    ds = MovingShapes(tiny_clips_cfg(num_train=n, num_frames=frames), "train")
    return {"video": torch.stack([ds[i]["video"] for i in range(n)])}


def test_siamese_decoder_attends_to_the_other_view():
    torch.manual_seed(0)
    m = SiamMAE(tiny_siammae_cfg()).eval()
    a, b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    out = m.forward_views(a, b, torch.Generator().manual_seed(0))
    other = m.forward_views(torch.randn(2, 3, 16, 16), b, torch.Generator().manual_seed(0))
    assert torch.equal(out.mask, other.mask)  # same mask of the second view
    assert not torch.allclose(out.pred, other.pred, atol=1e-4)  # the prediction depends on the unmasked view
    # and the gradient of the loss reaches the unmasked view's pixels through the cross-attention
    a = a.clone().requires_grad_(True)
    m.forward_views(a, b, torch.Generator().manual_seed(0)).loss.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_siamese_decoder_blocks_are_self_cross_mlp():
    m = SiamMAE(tiny_siammae_cfg(decoder_depth=2))
    for blk in m.decoder.blocks:
        assert blk.self_attention and hasattr(blk, "cross") and hasattr(blk, "mlp")


def test_siammae_views_are_two_frames_with_a_gap_in_range():
    m = SiamMAE(tiny_siammae_cfg(frame_gap_min=2, frame_gap_max=3))
    video = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(64, 3, 8, 16, 16).contiguous()  # frame index as value
    first, second = m.make_views({"video": video}, torch.Generator().manual_seed(0))
    f1, f2 = first[:, 0, 0, 0], second[:, 0, 0, 0]
    gap = f2 - f1
    assert ((gap >= 2) & (gap <= 3)).all() and set(gap.tolist()) == {2.0, 3.0}
    assert (f1 >= 0).all() and (f2 <= 7).all()


def test_siammae_mask_ratio_and_loss_falls():
    torch.manual_seed(0)
    m = SiamMAE(tiny_siammae_cfg())
    out = m(_clips(), generator=torch.Generator().manual_seed(0))
    assert out.mask.shape == (8, 16) and (out.mask.sum(1) == 16 - 1).all()  # 0.95 of 16 patches: one visible
    first, last = loss_falls(SiamMAE(tiny_siammae_cfg()), _clips(), steps=25, lr=2e-3)
    assert last < 0.85 * first


def test_cropmae_local_crop_lies_inside_global_and_loss_falls():
    u = torch.rand(256, 4, generator=torch.Generator().manual_seed(0))
    boxes = random_boxes(u, (0.4, 1.0), (0.75, 1.333))
    assert ((boxes[:, 0].abs() + boxes[:, 2]) <= 1 + 1e-6).all() and ((boxes[:, 1].abs() + boxes[:, 3]) <= 1 + 1e-6).all()
    area = boxes[:, 2] * boxes[:, 3]
    assert (area <= 1.0 + 1e-6).all() and (area >= 0.4 * 0.999).all()
    # the identity box returns the image
    img = torch.randn(2, 3, 16, 16)
    ident = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(2, 4)
    assert torch.allclose(crop_resize(img, ident, 16), img, atol=1e-5)
    torch.manual_seed(0)
    m = CropMAE(tiny_cropmae_cfg())
    out = m(_clips(), generator=torch.Generator().manual_seed(0))
    assert (out.mask.sum(1) == 15).all()  # 0.985 would leave no patch: one stays visible
    first, last = loss_falls(CropMAE(tiny_cropmae_cfg()), _clips(), steps=25, lr=2e-3)
    assert last < 0.85 * first


def test_siamese_features_per_frame():
    m = SiamMAE(tiny_siammae_cfg(num_frames=4))
    batch = _clips(n=2)
    assert m.encode(batch).shape == (2, m.feature_dim())
    assert m.frame_features(batch["video"]).shape == (2, 4, 4, 4, 32)
    hidden, recon = m.reconstruct_video(batch["video"], torch.Generator().manual_seed(0))
    assert hidden.shape == (2, 4, 16, 16) and recon.shape == batch["video"].shape
    assert torch.equal(recon[:, :, 0], batch["video"][:, :, 0])
