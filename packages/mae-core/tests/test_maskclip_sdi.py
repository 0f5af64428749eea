"""maskclip-sdi (OpenSDI's MaskCLIP) and the sdi-shapes data: edge band, loss terms, fusion direction, frozen branch."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import mae_core
from mae_core.data.sdi import SDIConfig, SyntheticSDI, mae_inpaint, random_regions
from mae_core.data.shapes import ShapesConfig, SyntheticShapes
from mae_core.data.utils import collate_dicts
from mae_core.models.image_mae import ImageMAE, ImageMAEConfig
from mae_core.models.maskclip_sdi import AttentionFusion, MaskCLIPSDIConfig, edge_weights, sdi_loss

TINY = dict(patch_size=4, embed_dim=32, depth=2, num_heads=2, fusion_blocks=[1], teacher_layers=[0],
            teacher="random", teacher_embed_dim=32, teacher_depth=1, teacher_num_heads=2, init="none",
            decoder_embed_dim=8, align_dim=16, drop_path=0.0, dropout=0.0)
DATA = dict(image_size=16, num_train=8, num_test=4, generator="blur", max_region=3)


def test_edge_band_as_imdlbenco_computes_it():
    m = torch.zeros(1, 1, 7, 7)
    m[..., 2:5, 2:5] = 1  # a 3 x 3 region
    expected = torch.tensor([  # dilation of the region by the 3-wide cross, less the centre (no outside neighbour)
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 0, 1, 1, 0],
        [0, 1, 1, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(edge_weights(m, 3)[0, 0], expected)
    wide = edge_weights(m, 5)[0, 0]  # arms of 2: the centre now reaches outside, corners of the 9 x 9 cross stay out
    assert wide[3, 3] == 1 and wide[0, 3] == 1 and wide[1, 1] == 0 and wide.sum() == 9 + 4 * 6
    assert edge_weights(torch.zeros(1, 1, 7, 7), 3).sum() == 0  # a real image has no edge
    assert edge_weights(torch.ones(1, 1, 7, 7), 3).sum() == 0  # nor a fully edited one (zero padding)


def test_loss_is_ce_plus_bce_plus_20_times_edge_weighted_bce():
    assert MaskCLIPSDIConfig().edge_lambda == 20.0
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 7, 7, generator=g)
    region = torch.zeros(2, 1, 7, 7)
    region[0, :, 2:5, 2:5] = 1
    cls = torch.tensor([[0.3, -0.2], [1.0, 2.0]])
    label = torch.tensor([1, 0])
    terms = sdi_loss(logits, region, cls, label, edge_width=3, edge_lambda=20.0)
    p = logits.sigmoid()
    per_px = -(region * p.log() + (1 - region) * (1 - p).log())
    w = edge_weights(region, 3)
    ce = -(math.log(math.exp(-0.2) / (math.exp(0.3) + math.exp(-0.2))) + math.log(math.exp(1) / (math.exp(1) + math.exp(2)))) / 2
    assert abs(float(terms["ce"]) - ce) < 1e-5
    assert torch.allclose(terms["bce"], per_px.mean(), atol=1e-5)
    assert torch.allclose(terms["edge"], 20 * (w * per_px).sum() / per_px.numel(), atol=1e-5)  # mean over all pixels
    assert torch.allclose(terms["loss"], terms["ce"] + terms["bce"] + terms["edge"])


def test_fusion_queries_are_the_frozen_tokens():
    torch.manual_seed(0)
    fuse = AttentionFusion(frozen_dim=12, dim=8, num_heads=2).eval()
    own, frozen = torch.randn(1, 5, 8), torch.randn(1, 3, 12)
    out = fuse(own, frozen)
    assert out.shape == (1, 3, 8)  # one output per query = per frozen token
    moved = frozen.clone()
    moved[0, 1] += 1.0
    diff = (fuse(own, moved) - out).abs().sum(-1)[0]
    assert diff[1] > 1e-4 and diff[0] == 0 and diff[2] == 0  # a query changes only its own row
    own2 = own.clone()
    own2[0, 4] += 1.0
    assert ((fuse(own2, frozen) - out).abs().sum(-1)[0] > 1e-6).all()  # every row reads every key / value


def _tiny(ds=None, **over):
    ds = ds or mae_core.create_dataset("sdi-shapes", "train", **DATA)
    return mae_core.create_model("maskclip-sdi", dataset=ds, data_config=DATA, **{**TINY, **over}), ds


def test_frozen_teacher_gets_no_gradient_and_stays_out_of_the_weights():
    model, ds = _tiny()
    batch = collate_dicts([ds[i] for i in range(4)])
    teacher = model.teacher
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    model(batch).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    assert model.fusion[0].adjust[0].weight.grad.abs().sum() > 0  # the fusion itself trains
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in teacher.model.state_dict().items())
    ids = {id(p) for p in teacher.model.parameters()}
    assert not any(id(p) in ids for p in model.parameters())
    assert not any("teacher" in k for k in model.state_dict())


def test_mae_only_localiser_has_no_frozen_branch():
    model, ds = _tiny(teacher="none")
    assert model.fusion is None
    batch = collate_dicts([ds[i] for i in range(4)])
    mask, logits, _ = model.predict(batch["image"])
    assert mask.shape == (4, 1, 16, 16) and logits.shape == (4, 2) and model._teacher is None


def test_fake_regions_change_only_their_pixels():
    real = SyntheticShapes(ShapesConfig(image_size=16, num_train=16, num_test=4), "train").images
    for gen in ("blur", "shuffle"):
        ds = SyntheticSDI(SDIConfig(**{**DATA, "num_train": 16, "generator": gen, "min_region": 2}), "train")
        inside = ds.regions.bool().expand_as(ds.images)
        assert torch.equal(ds.images[~inside], real[~inside])
        assert torch.equal(ds.labels.bool(), ds.regions.flatten(1).amax(1).bool())
        assert 0 < int(ds.labels.sum()) < 16
        changed = (ds.images - real).abs().sum(1) > 0  # (n, S, S)
        assert changed.float().sum() > 0.5 * ds.regions.sum()
    # the MAE generator: its reconstruction inside the region, the real pixels outside
    torch.manual_seed(0)
    mae = ImageMAE(ImageMAEConfig(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16,
                                  decoder_depth=1, decoder_num_heads=2, norm_pix_loss=False))
    region = random_regions(4, 16, 4, 1, 3, torch.Generator().manual_seed(0))
    out = mae_inpaint(mae, real[:4], region, 4)
    inside = region.bool().expand_as(out)
    assert torch.equal(out[~inside], real[:4][~inside]) and (out[inside] - real[:4][inside]).abs().min() > 0
    assert F.mse_loss(out, real[:4]) > 0
