"""Behaviour pinned to the authors' code: BM-MAE (Robinet et al., ``bmmae/model.py``, ``pretrain_bmmae.py``,
``bmmae/augmentations.py``) and the chest X-ray MAE (Xiao et al., lambert-x/medical_mae: the README commands,
``main_finetune_chestxray.py``, timm's ``rand-m6-mstd0.5-inc1``)."""
import numpy as np
import pytest
import torch
import yaml

from mae_core.masking import token_budget_masking
from mae_core.runconfig import resolve_run_config
from mae_medical.methods.bm_mae import BMMAE
from mae_medical.methods.budget_masking import dirichlet_round_masking


# ---- BM-MAE token budget ---------------------------------------------------------------------------------------
def _shares(masking, n=4000, seed=0):
    info = masking([64] * 4, 64, n, generator=torch.Generator().manual_seed(seed))
    visible = (1 - info.mask).reshape(n, 4, 64).sum(-1)
    assert torch.all(visible.sum(-1) == 64)
    return visible / 64


def test_budget_split_largest_share_matches_dirichlet():
    """Mean largest share over 4000 draws against a numpy Dirichlet(1, 1, 1, 1) sample (exact value H_4 / 4 =
    0.5208); the exponential race of mae-core is flatter and fails the same check."""
    ref = float(np.random.default_rng(0).dirichlet([1.0] * 4, 200_000).max(1).mean())
    assert abs(ref - 25 / 48) < 0.002
    ours = _shares(dirichlet_round_masking)
    assert abs(float(ours.max(1).values.mean()) - ref) < 0.01
    assert torch.allclose(ours.mean(0), torch.full((4,), 0.25), atol=0.015)
    # the marginal share of one modality is Beta(1, 3): P(round(64 p) <= 5) = P(p < 5.5 / 64) = 1 - (1 - 5.5 / 64)^3
    assert abs(float((ours[:, 0] * 64 <= 5).float().mean()) - (1 - (1 - 5.5 / 64) ** 3)) < 0.02
    race = _shares(token_budget_masking)
    assert float(race.max(1).values.mean()) < ref - 0.02


def test_budget_counts_are_rounded_shares():
    """Modality g keeps round(p_g K) tokens; a rounded total above K loses random picks (the reference's
    argsort(mask + noise)), one below K gains random other tokens."""
    shares = torch.tensor([[0.5, 0.3, 0.2, 0.0],     # 5, 3, 2, 0 = 10: exact
                           [0.26, 0.26, 0.26, 0.22],  # 3, 3, 3, 2 = 11: one pick dropped
                           [0.24, 0.24, 0.24, 0.28]])  # 2, 2, 2, 3 = 9: one token added
    for seed in range(20):
        info = dirichlet_round_masking([8] * 4, 10, 3, shares=shares, generator=torch.Generator().manual_seed(seed))
        vis = (1 - info.mask).reshape(3, 4, 8).sum(-1)
        assert vis[0].tolist() == [5, 3, 2, 0]
        assert torch.all(vis.sum(-1) == 10)
        assert (torch.tensor([3, 3, 3, 2]) - vis[1]).tolist() in ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],
                                                                [0, 0, 0, 1])
        extra = vis[2] - torch.tensor([2, 2, 2, 3])
        assert int(extra.sum()) == 1 and int(extra.min()) == 0
    assert torch.all(dirichlet_round_masking([8] * 4, 0, 2).mask == 1)  # an empty budget masks everything


def test_budget_redraws_shares_that_exceed_a_group():
    """Visible fraction 0.5 of four groups: K = 2L, so a share must stay below 0.5 (the reference redraws); with the
    rounding a group then keeps at most round(0.5 K) = L tokens and never exactly L unless p rounds up to 0.5."""
    n = 3000
    info = dirichlet_round_masking([16] * 4, 32, n, generator=torch.Generator().manual_seed(0))
    vis = (1 - info.mask).reshape(n, 4, 16).sum(-1)
    assert torch.all(vis.sum(-1) == 32) and torch.all(vis <= 16)
    # Dirichlet(1^4) conditioned on max < 0.5: its mean largest share (numpy rejection sample)
    p = np.random.default_rng(1).dirichlet([1.0] * 4, 400_000)
    ref = float(p[p.max(1) < 0.5].max(1).mean())
    assert abs(float(vis.max(-1).values.float().mean() / 32) - ref) < 0.01


def test_model_uses_the_round_split_and_race_flag(tiny_cfg_factory, synth_batch):
    tokens = torch.zeros(4000, 4 * 64, 1)
    batch = {k: torch.zeros(1, 1, 32, 32, 32) for k in ("t1", "t1ce", "t2", "flair")}
    for split, lo, hi in (("round", 0.51, 0.53), ("race", 0.46, 0.50)):
        m = BMMAE(tiny_cfg_factory(budget_split=split))
        vis = (1 - m.make_mask(batch, tokens, torch.Generator().manual_seed(0)).mask).reshape(4000, 4, 64).sum(-1)
        assert lo < float(vis.max(-1).values.mean() / 64) < hi, split


# ---- BM-MAE paper preset ---------------------------------------------------------------------------------------------
def test_bm_mae_paper_preset_matches_reference():
    cfg = resolve_run_config("bm-mae", domain="medical", preset="bm-mae-paper")
    m, d, t = cfg.model, cfg.data, cfg.train
    assert cfg.dataset.name == "brain-folder"
    assert (m.embed_dim, m.depth, m.num_heads, m.mlp_ratio * m.embed_dim) == (768, 12, 12, 1536)
    assert (m.decoder_embed_dim, m.decoder_depth, m.decoder_num_heads) == (384, 3, 12)
    assert (m.decoder_mlp_ratio * m.decoder_embed_dim, m.decoder_dropout) == (1536, 0.1)
    assert (m.img_size, m.patch_size, m.visible_fraction, m.budget_split, m.norm_pix_loss) == (128, 16, 0.25, "round",
                                                                                               False)
    assert (t.lr, t.batch_size, t.warmup_epochs, t.epochs, t.weight_decay, tuple(t.betas)) == (
        1e-4, 6, 50, 1000, 0.05, (0.9, 0.999))
    assert (d.spacing, d.image_size, d.train_crop, d.flip_prob, d.flip_axes) == ([1.0] * 3, 128, "center", 0.5,
                                                                                 [0, 1, 2])
    assert (d.intensity_scale, d.intensity_shift, d.crops_per_case) == (0.1, 0.1, 1)


def test_decoder_mlp_ratio_and_dropout(tiny_cfg_factory, synth_batch):
    m = BMMAE(tiny_cfg_factory(mlp_ratio=2.0, decoder_mlp_ratio=4.0, decoder_dropout=0.1, decoder_depth=3))
    assert m.encoder.blocks[0].mlp.fc1.out_features == 64 and len(m.decoder.blocks) == 3
    blk = m.decoder.blocks[0]
    assert blk.mlp.fc1.out_features == 128 and blk.attn.attn_drop == 0.1 and blk.mlp.drop.p == 0.1
    assert blk.attn.proj_drop.p == 0.1
    m.train()
    g = torch.Generator().manual_seed(0)
    a, b = m(synth_batch, generator=g).pred, m(synth_batch, generator=torch.Generator().manual_seed(0)).pred
    assert not torch.equal(a, b)  # same mask, different dropout
    m.eval()
    a, b = m(synth_batch, generator=torch.Generator().manual_seed(0)).pred, m(
        synth_batch, generator=torch.Generator().manual_seed(0)).pred
    assert torch.equal(a, b)


def test_brain_folder_reference_transforms(tmp_path):
    """Centre crop for training, flips drawn on each of the three axes, one intensity scale and shift per crop
    shared by the modalities: crop = flips(centre) x (1 + s) + o with |s|, |o| <= 0.1."""
    from mae_medical.data.brain_folder import BrainFolder, BrainFolderConfig
    from mae_medical.data.synthetic_brain import write_cases

    write_cases(tmp_path / "data", num=1, size=24)
    base = dict(path=str(tmp_path / "data"), image_size=16, crops_per_case=48, train_crop="center")
    plain = BrainFolder(BrainFolderConfig(**base), "train")
    centre = plain[0]
    assert all(torch.equal(plain[i]["t1"], centre["t1"]) for i in range(1, 4))
    ds = BrainFolder(BrainFolderConfig(**base, flip_prob=0.5, flip_axes=[0, 1, 2], intensity_scale=0.1,
                                       intensity_shift=0.1), "train")
    seen = set()
    for i in range(len(ds)):
        s = ds[i]
        for flips in [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]:
            dims = [d + 1 for d, f in enumerate(flips) if f]
            ref = {m: torch.flip(centre[m], dims) if dims else centre[m] for m in ds.modalities}
            x, y = ref["t1"].flatten().double(), s["t1"].flatten().double()
            scale = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
            shift = float(y.mean() - scale * x.mean())
            if torch.allclose(y, scale * x + shift, atol=1e-4):
                seen.add(flips)
                assert abs(scale - 1) <= 0.1 + 1e-6 and abs(shift) <= 0.1 + 1e-6
                for m in ds.modalities:  # the same draw for every modality
                    assert torch.allclose(s[m].double(), scale * ref[m].double() + shift, atol=1e-4)
                break
        else:
            raise AssertionError(f"crop {i} is no flipped, scaled and shifted centre crop")
    assert len(seen) >= 6, seen  # every axis flipped in some crops, not in others


# ---- chest X-ray MAE recipe ------------------------------------------------------------------------------------------
def test_xray_pretraining_uses_plain_pixel_targets():
    from mae_medical.methods.xray_mae import XRayMAEConfig

    assert XRayMAEConfig().norm_pix_loss is False  # the reference commands do not pass --norm_pix_loss
    cfg = resolve_run_config("xray-mae", domain="medical")
    assert cfg.model.norm_pix_loss is False and cfg.model.mask_ratio == 0.9


def test_xray_augmentation_pipelines():
    """Pre-training: RandomResizedCrop(0.5-1) + h-flip; fine-tuning: RandomResizedCrop(0.08-1) + h-flip +
    RandAugment m6 mstd 0.5 (timm create_transform order); test images untouched."""
    from torchvision.transforms import v2

    from mae_medical.data.randaugment import RandAugment
    from mae_medical.data.xray import SyntheticChest, SyntheticChestConfig

    def ops(augment, split="train"):
        ds = SyntheticChest(SyntheticChestConfig(image_size=16, num_train=2, num_test=2, augment=augment), split)
        return None if ds.aug is None else ds.aug.transforms

    pre, ft = ops("pretrain"), ops("finetune")
    assert [type(o) for o in pre] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip]
    assert [type(o) for o in ft] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, RandAugment]
    assert tuple(pre[0].scale) == (0.5, 1.0) and tuple(ft[0].scale) == (0.08, 1.0)
    assert pre[1].p == ft[1].p == 0.5
    assert (ft[2].magnitude, ft[2].magnitude_std, ft[2].num_ops, ft[2].prob) == (6, 0.5, 2, 0.5)
    assert ops("finetune", "test") is None and ops("none") is None


def test_randaugment_level_args_hand_computed():
    from mae_medical.data.randaugment import OPS, level_args

    assert len(OPS) == 15
    assert level_args("Rotate", 6, -1) == (-18.0,)
    assert level_args("PosterizeIncreasing", 6) == (2,)  # 4 - int(2.4)
    assert level_args("SolarizeIncreasing", 6) == (103,)  # 256 - int(153.6)
    assert level_args("SolarizeAdd", 6) == (66,)
    assert level_args("ContrastIncreasing", 6, -1) == pytest.approx((0.46,))
    assert level_args("ShearX", 6) == pytest.approx((0.18,))
    assert level_args("TranslateYRel", 6) == pytest.approx((0.27,))
    assert level_args("BrightnessIncreasing", 10, -1) == (0.1,)  # 1 - 0.9 = 0.1, kept >= 0.1
    assert level_args("AutoContrast", 6) == ()


def test_randaugment_ops_match_timm():
    """Every op against timm's PIL implementation (timm is a dev dependency): photometric ops within one grey
    level, geometric ones (same affine maps, bilinear, grey fill) within 2 grey levels on average."""
    import timm.data.auto_augment as timm_aa
    from PIL import Image

    from mae_medical.data.randaugment import OPS, apply_op, level_args

    assert list(OPS) == list(timm_aa._RAND_INCREASING_TRANSFORMS)
    rng = np.random.default_rng(0)
    arr = (rng.uniform(0, 1, (28, 28)) * 120 + np.linspace(0, 120, 28)[None]).astype(np.uint8)
    img = Image.fromarray(arr, "L")
    for name in OPS:
        for sign in (1.0, -1.0):
            args = level_args(name, 6.0, sign)
            ref = np.asarray(timm_aa.NAME_TO_OP[name](img, *args, fillcolor=128, resample=Image.BILINEAR), float)
            ours = apply_op(torch.from_numpy(arr)[None], name, args)[0].numpy().astype(float)
            err = np.abs(ref - ours)
            if name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
                assert err.mean() < 2.0, (name, err.mean())
            else:
                assert err.max() <= 1, (name, err.max())


def test_randaugment_draws(monkeypatch):
    """Two ops per image drawn uniformly with replacement, each kept with probability 0.5, magnitude N(6, 0.5)."""
    import mae_medical.data.randaugment as ra

    calls = []
    monkeypatch.setattr(ra, "level_args", lambda name, m, sign=1.0: calls.append((name, m, sign)) or ())
    monkeypatch.setattr(ra, "apply_op", lambda img, name, args, fill=128.0: img)
    torch.manual_seed(0)
    aug = ra.RandAugment()
    img = torch.zeros(1, 8, 8, dtype=torch.uint8)
    for _ in range(4000):
        aug(img)
    assert abs(len(calls) - 4000) < 150  # 8000 draws x 0.5
    mags = torch.tensor([m for _, m, _ in calls])
    assert abs(float(mags.mean()) - 6) < 0.05 and abs(float(mags.std()) - 0.5) < 0.05
    counts = torch.tensor([sum(1 for n, _, _ in calls if n == op) for op in ra.OPS]).float()
    assert counts.min() > 0.7 * len(calls) / 15 and counts.max() < 1.3 * len(calls) / 15
    assert abs(sum(s < 0 for _, _, s in calls) / len(calls) - 0.5) < 0.04


_TINY_XRAY = ["--patch-size", "4", "--embed-dim", "32", "--depth", "1", "--num-heads", "2", "--decoder-embed-dim", "16",
              "--decoder-depth", "1", "--decoder-num-heads", "2", "--image-size", "16", "--num-train", "8",
              "--num-test", "8", "--no-progress"]


def test_cli_finetune_applies_xray_recipe(tmp_path):
    from mae_medical.cli import main

    assert main(["pretrain", "--method", "xray-mae", *_TINY_XRAY, "--epochs", "1", "--batch-size", "4",
                 "--out", str(tmp_path / "pre")]) == 0
    assert main(["finetune", "--run", str(tmp_path / "pre"), "--epochs", "1", "--batch-size", "4", "--num-test", "8",
                 "--no-progress", "--out", str(tmp_path / "ft")]) == 0
    rec = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())
    assert rec["finetune"]["layer_decay"] == 0.55 and rec["finetune"]["drop_path_rate"] == 0.2
    assert rec["finetune"]["label_smoothing"] == 0.0 and rec["data"]["augment"] == "finetune"
    t = rec["train"]
    # the recipe's 5 warm-up epochs, capped at a tenth of the epochs as every fine-tuning run (1 epoch given here)
    assert (t["base_lr"], t["warmup_epochs"], t["min_lr"], list(t["betas"])) == (2.5e-4, 0.1, 1e-5, [0.9, 0.999])
    assert (t["epochs"], t["batch_size"]) == (1, 4)  # given on the command line: kept
    # flags given win over the recipe
    assert main(["finetune", "--run", str(tmp_path / "pre"), "--epochs", "1", "--batch-size", "4", "--layer-decay",
                 "0.9", "--augment", "none", "--betas", "0.8", "0.9", "--no-progress", "--out",
                 str(tmp_path / "ft2")]) == 0
    rec = yaml.safe_load((tmp_path / "ft2" / "config.yaml").read_text())
    assert rec["finetune"]["layer_decay"] == 0.9 and rec["finetune"]["drop_path_rate"] == 0.2
    assert rec["data"]["augment"] == "none" and list(rec["train"]["betas"]) == [0.8, 0.9]


def test_cli_finetune_other_methods_keep_core_defaults(tmp_path):
    from mae_core.workflows import FinetuneConfig
    from mae_medical.cli import main

    assert main(["finetune", "--method", "bm-mae", "--scratch", "--preset", "bm-mae-tiny", "--image-size", "16",
                 "--patch-size", "8", "--num-train", "4", "--num-test", "4", "--epochs", "1", "--batch-size", "2",
                 "--no-progress", "--out", str(tmp_path / "ft")]) == 0
    rec = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())
    d = FinetuneConfig()
    assert rec["finetune"]["layer_decay"] == d.layer_decay and rec["finetune"]["label_smoothing"] == d.label_smoothing
    assert rec["data"].get("augment") != "finetune" and rec["train"]["base_lr"] == 1e-3  # mae-core's fine-tuning lr
