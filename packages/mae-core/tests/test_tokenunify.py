"""TokenUnify (mae_core.models.tokenunify), the membranes data set and the segmentation grid probe."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mae_core
from mae_core.contract import check_contract
from mae_core.data.membranes import MembranesConfig, SyntheticMembranes, boundaries
from mae_core.errors import MaeError
from mae_core.eval.grid import dice_scores, segmentation_probe
from mae_core.layers import patchify
from mae_core.models.tokenunify import causal_mask, prefix_noise_fill, random_token_noise
from mae_core.testing import single_thread

TINY = dict(adapt=False, img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def tiny(**kw):
    torch.manual_seed(0)
    return mae_core.create_model("tokenunify", **{**TINY, "init": "none", **kw})


def images(n=4, size=16):
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(1))


# ---- the two corruptions ----------------------------------------------------------------------------------------------
def test_random_token_noise_replaces_int_L_ratio_tokens_and_leaves_the_rest():
    tokens = torch.full((5, 64, 8), 7.0)
    x, mask = random_token_noise(tokens, 0.4, torch.Generator().manual_seed(0))
    changed = (x != 7.0).all(-1)
    # the reference covers int(64 * 0.4) = 25 tokens (MAE's keep count int(64 * 0.6) = 38 would hide 26)
    assert changed.sum(1).tolist() == [25] * 5
    assert torch.equal(changed.float(), mask)
    assert torch.equal(x[~changed], tokens[~changed])
    noise = x[changed]
    assert abs(float(noise.mean())) < 0.1 and abs(float(noise.std()) - 1) < 0.1  # N(0, 1) fill
    again, _ = random_token_noise(tokens, 0.4, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)  # all randomness from the generator


def test_prefix_noise_fill_keeps_exactly_the_first_k_tokens():
    length = 16
    tokens = torch.full((300, length, 4), 7.0)
    x, k = prefix_noise_fill(tokens, torch.Generator().manual_seed(0))
    kept = (x == 7.0).all(-1)
    pos = torch.arange(length)[None]
    assert torch.equal(kept, pos < k[:, None])  # a prefix, then noise everywhere after it
    assert int(k.min()) == 1 and int(k.max()) == length - 1  # np.random.randint(1, L): 1 .. L - 1
    assert len(k.unique()) == length - 1
    assert abs(float(x[~kept].std()) - 1) < 0.05


# ---- the causal next-token head ------------------------------------------------------------------------------------------
def test_causal_mask_is_lower_triangular():
    m = causal_mask(4)
    assert m.tolist() == [[True, False, False, False], [True, True, False, False], [True, True, True, False],
                          [True, True, True, True]]


def test_next_token_prediction_ignores_later_tokens():
    model = tiny().eval()
    emb = torch.randn(3, 16, 32, generator=torch.Generator().manual_seed(0))
    k = torch.tensor([3, 8, 15])
    with torch.no_grad():
        base = model.next_token(emb, model.pos_embed, k)
        later = emb.clone()
        for i, ki in enumerate(k.tolist()):
            later[i, ki:] = torch.randn(16 - ki, 32)  # the token predicted and everything after it
        same = model.next_token(later, model.pos_embed, k)
        earlier = emb.clone()
        earlier[:, 0] = 5 * torch.randn(3, 32)  # a token inside every prefix
        other = model.next_token(earlier, model.pos_embed, k)
    assert torch.allclose(base, same, atol=1e-6)
    assert (base - other).abs().amax(1).min() > 100 * (base - same).abs().max().clamp_min(1e-6)


# ---- the losses -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.3, 2.0)])
def test_stage2_loss_is_the_weighted_sum_of_next_all_and_next_token(weights):
    model = tiny(next_all_weight=weights[0], next_token_weight=weights[1])
    x = images()
    out = model({"image": x}, generator=torch.Generator().manual_seed(0))
    target = patchify(x, 4)
    k = out.extra["k"]
    all_by_hand = ((out.pred - target) ** 2).mean()  # every token, kept or noise-filled
    next_by_hand = ((out.extra["next_pred"] - target[torch.arange(4), k]) ** 2).mean()
    assert torch.allclose(out.metrics["next_all"], all_by_hand)
    assert torch.allclose(out.metrics["next_token"], next_by_hand)
    assert torch.allclose(out.loss, weights[0] * all_by_hand + weights[1] * next_by_hand)
    assert torch.equal(out.mask, (torch.arange(16)[None] >= k[:, None]).float())


def test_stage1_loss_is_the_mse_over_the_whole_input():
    model = tiny(stage=1)
    x = images()
    out = model({"image": x}, generator=torch.Generator().manual_seed(0))
    assert model.head_next is None
    assert int(out.mask.sum(1)[0]) == int(16 * 0.4)
    assert torch.allclose(out.loss, ((out.pred - patchify(x, 4)) ** 2).mean())
    check_contract(model, {"image": x})


def test_stage2_starts_from_the_stage1_weights(tmp_path):
    first = tiny(stage=1)
    first.save_pretrained(tmp_path / "s1")
    second = tiny(init=str(tmp_path / "s1"))
    for name, v in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], v), name
    assert len(second.config.init_sha256) == 64
    assert second.head_next is not None
    mae_core.create_model("image-mae", adapt=False, img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=1,
                          num_heads=2, decoder_embed_dim=16, decoder_num_heads=2).save_pretrained(tmp_path / "mae")
    with pytest.raises(MaeError, match="not a tokenunify run"):
        tiny(init=str(tmp_path / "mae"))
    with pytest.raises(MaeError, match="not found"):
        tiny(init=str(tmp_path / "missing"))


def test_stage2_refuses_a_mask_schedule():
    from mae_core.masking import MaskRatioSchedule
    with pytest.raises(MaeError, match="prefix of random length"):
        MaskRatioSchedule(tiny())
    MaskRatioSchedule(tiny(stage=1)).set_progress(0.0)


# ---- data and probe ---------------------------------------------------------------------------------------------------
def test_boundaries_mark_both_sides_of_a_cell_border():
    inst = torch.tensor([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    assert boundaries(inst).tolist() == [[0, 1, 1], [1, 1, 1], [1, 1, 1]]
    inst = torch.tensor([[0, 0, 0], [0, 0, 0]])
    assert boundaries(inst).sum() == 0


def test_membranes_samples_carry_their_boundary_map():
    ds = SyntheticMembranes(MembranesConfig(image_size=16, num_train=6, num_test=2))
    s = ds[3]
    assert s["image"].shape == (1, 16, 16) and s["seg"].shape == (16, 16)
    assert torch.equal(s["seg"], boundaries(s["instances"]))
    assert len(s["instances"].unique()) <= s["label"] + ds.config.min_cells
    again = SyntheticMembranes(MembranesConfig(image_size=16, num_train=6, num_test=2))
    assert torch.equal(ds.images, again.images)
    assert not torch.equal(ds.images[:2], SyntheticMembranes(ds.config, "test").images)


def test_dice_by_hand():
    pred = torch.tensor([[1, 1, 0, 0]])
    target = torch.tensor([[1, 0, 1, 0]])
    assert dice_scores(pred, target, 2) == [2 * 1 / (2 + 2)]
    assert dice_scores(pred, target, 3)[1] == 1.0  # a class in neither


def test_segmentation_probe_reads_pixel_labels_through_tokens():
    g = torch.Generator().manual_seed(0)
    seg = (torch.rand(48, 8, 8, generator=g) < 0.3).long()
    informative = patchify(seg[:, None].float(), 2)  # (48, 16, 4): each token holds its own pixels' labels
    res = segmentation_probe(informative[:32], seg[:32], informative[32:], seg[32:], (4, 4), epochs=60, lr=0.05)
    noise = torch.randn(48, 16, 4, generator=g)
    blind = segmentation_probe(noise[:32], seg[:32], noise[32:], seg[32:], (4, 4), epochs=60, lr=0.05)
    assert res["dice"] > 0.95 and res["pixel_acc"] > 0.98
    assert blind["dice"] < 0.6
    with pytest.raises(MaeError, match="whole number of patches"):
        segmentation_probe(informative, seg[:, :7], informative, seg[:, :7], (4, 4))
