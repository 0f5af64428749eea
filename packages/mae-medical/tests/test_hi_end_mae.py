"""Hi-End-MAE: the decoder's tap order, the projections of un-normed taps, the loss, the UNETR export, the CLI."""
import json

import pytest
import torch

from mae_core.errors import MaeError
from mae_medical.methods.hi_end_mae import HiEndMAE, HiEndMAEConfig, default_taps

MODS = ["t1", "flair"]


def tiny(**kw) -> HiEndMAE:
    base = dict(modality_names=MODS, img_size=16, patch_size=4, embed_dim=24, depth=4, num_heads=2,
                decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    base.update(kw)
    torch.manual_seed(0)
    return HiEndMAE(HiEndMAEConfig(**base)).eval()


def batch(n=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, 1, size, size, size, generator=g) for m in MODS}


def record(model, b):
    """Run a forward with hooks: encoder block outputs, decoder projection inputs / outputs, the context each cross
    block received, and the order in which decoder blocks ran."""
    seen = {"blocks": {}, "proj_in": {}, "proj_out": {}, "ctx": {}, "order": []}

    def hook(fn):  # hooks must return None (a returned value would replace the module's output)
        return lambda *a: (fn(*a), None)[1]

    hooks = [blk.register_forward_hook(hook(lambda m, a, o, i=i: seen["blocks"].__setitem__(i, o)))
             for i, blk in enumerate(model.encoder.blocks)]
    hooks += [model.encoder.norm.register_forward_hook(hook(lambda m, a, o: seen.__setitem__("latent", o)))]
    dec = model.decoder
    for i, p in enumerate(dec.proj):
        hooks.append(p.register_forward_hook(hook(
            lambda m, a, o, i=i: (seen["proj_in"].setdefault(i, []).append(a[0]),
                                  seen["proj_out"].setdefault(i, []).append(o)))))
    for i, blk in enumerate(dec.blocks):
        hooks.append(blk.register_forward_hook(hook(lambda m, a, o, i=i: seen["order"].append(("self", i)))))
    for i, blk in enumerate(dec.cross_blocks):
        hooks.append(blk.register_forward_pre_hook(hook(
            lambda m, a, i=i: (seen["ctx"].__setitem__(i, a[1]), seen["order"].append(("cross", i))))))
    out = model(b, generator=torch.Generator().manual_seed(1))
    for h in hooks:
        h.remove()
    return out, seen


def test_default_taps_match_the_reference_indices():
    assert default_taps(12) == [3, 6, 9]  # hidden_states_out[3], [6], [9] of the reference (and UNETR's skips)
    assert tiny().tap_ids == [1, 2, 3]
    with pytest.raises(MaeError, match="taps"):
        tiny(taps=[0, 4])


def test_decoder_queries_the_deepest_tap_first():
    model = tiny()
    out, seen = record(model, batch())
    taps = model.tap_ids  # shallow -> deep: blocks 1, 2, 3
    # every self-attention block runs before the cross blocks, which run in order 0, 1, 2
    assert seen["order"] == [("self", 0), ("cross", 0), ("cross", 1), ("cross", 2)]
    for k in range(3):  # cross block k reads tap len - 1 - k through its own projection
        tap = len(taps) - 1 - k
        assert torch.equal(seen["ctx"][k], seen["proj_out"][tap][0])
        assert torch.equal(seen["proj_in"][tap][0], seen["blocks"][taps[tap]])
    assert torch.equal(seen["ctx"][0], model.decoder.proj[2](seen["blocks"][3]))
    assert torch.equal(seen["ctx"][2], model.decoder.proj[0](seen["blocks"][1]))
    # a swapped order would give another context: the test can fail
    assert not torch.allclose(seen["ctx"][0], model.decoder.proj[2](seen["blocks"][1]))


def test_taps_are_projected_unnormed_and_the_final_output_normed():
    model = tiny()
    _, seen = record(model, batch())
    for i, t in enumerate(model.tap_ids):
        raw = seen["blocks"][t]
        assert torch.equal(seen["proj_in"][i][0], raw)  # the raw block output, cls token included
        assert raw.shape[1] == 1 + int(64 * 0.25)
        assert not torch.allclose(raw, model.encoder.norm(raw), atol=1e-3)
    # the projection of the final output gets the normed latent
    assert torch.equal(seen["proj_in"][3][0], seen["latent"])
    assert torch.allclose(seen["latent"], model.encoder.norm(seen["blocks"][3]))


def test_last_layer_ablation_reads_the_final_output_everywhere():
    model = tiny(decoder_kind="last")
    _, seen = record(model, batch())
    for k in range(3):
        assert torch.equal(seen["ctx"][k], model.decoder.proj[2 - k](seen["latent"]))


def test_plain_decoder_has_about_the_same_size():
    count = lambda m: sum(p.numel() for p in m.decoder.parameters())  # noqa: E731
    hi, plain = tiny(decoder_embed_dim=64, decoder_num_heads=4), tiny(decoder_embed_dim=64, decoder_num_heads=4,
                                                                      decoder_kind="plain")
    assert len(plain.decoder.blocks) == 1 + 4  # decoder_depth + 4 self-attention blocks in place of 3 cross blocks
    assert abs(count(hi) - count(plain)) / count(hi) < 0.05


def test_loss_is_mse_of_masked_patches_against_layer_normed_patches():
    model = tiny()
    b = batch()
    out = model(b, generator=torch.Generator().manual_seed(3))
    x = torch.cat([b["t1"], b["flair"]], 1)  # (B, C, 16, 16, 16), channels in the model's order
    n, c, p = x.shape[0], x.shape[1], 4
    # patches by hand: grid (d, h, w) row-major, inside a patch (pd, ph, pw, c)
    patches = torch.stack([torch.stack([x[i, :, d * p:(d + 1) * p, h * p:(h + 1) * p, w * p:(w + 1) * p]
                                        .permute(1, 2, 3, 0).reshape(-1) for d in range(4) for h in range(4)
                                        for w in range(4)]) for i in range(n)])
    mean = patches.mean(-1, keepdim=True)
    var = ((patches - mean) ** 2).mean(-1, keepdim=True)  # biased, as LayerNorm
    target = (patches - mean) / torch.sqrt(var + 1e-6)
    assert torch.allclose(out.target, target, atol=1e-5)
    mask = out.mask
    assert mask.shape == (n, 64) and bool((mask.sum(1) == 64 - 16).all())  # int(64 * 0.25) kept
    err = ((out.pred - target) ** 2).mean(-1)
    assert torch.allclose(out.loss, (err * mask).sum() / mask.sum(), atol=1e-6)
    assert not torch.allclose(out.loss, err.mean(), atol=1e-4)  # the visible patches do not count


def test_reconstruction_pastes_visible_patches_back():
    model = tiny()
    b = batch()
    rec = model.reconstruct(b, generator=torch.Generator().manual_seed(0))
    x = torch.cat([b["t1"], b["flair"]], 1)
    assert rec["reconstruction"].shape == x.shape
    keep = (rec["masked"] != 0)
    assert torch.equal(rec["reconstruction"][keep], x[keep])


def test_unetr_export_with_8_cubed_patches_matches_the_encoder():
    from mae_medical.unetr import to_unetr

    model = tiny(img_size=32, patch_size=8, depth=12, embed_dim=24, num_heads=2)
    net, report = to_unetr(model, out_channels=2, modalities=["flair"])
    assert report["patch_size"] == 8 and report["blocks_loaded"] == 12
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        assert net(x[:, 1:]).shape == (1, 2, 32, 32, 32)
        # our encoder's blocks on the patch tokens (no cls token, as UNETR) give UNETR's hidden states
        only_flair = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:]], 1)
        t = model.patch_embed(only_flair) + model.pos_embed
        _, hidden = net.vit(x[:, 1:])
        for i, blk in enumerate(model.encoder.blocks):
            t = blk(t)
            if i in (3, 6, 9):
                assert torch.allclose(t, hidden[i], atol=1e-4)
    with pytest.raises(MaeError, match="patch"):
        to_unetr(tiny(img_size=16, patch_size=4), 2)


def test_cli_pretrain_and_export(tmp_path, capsys):
    from mae_medical.cli import main

    run = tmp_path / "run"
    args = ["pretrain", "--method", "hi-end-mae", "--image-size", "16", "--embed-dim", "24", "--depth", "4",
            "--num-heads", "2", "--decoder-embed-dim", "16", "--decoder-num-heads", "2", "--num-train", "4",
            "--num-test", "2", "--epochs", "1", "--batch-size", "2", "--no-progress", "--device", "cpu",
            "--out", str(run)]
    assert main(args) == 0
    assert (run / "pictures" / "reconstruction.png").exists()
    capsys.readouterr()
    # patch 8 at 16^3 is a valid export (UNETR sizes for patch 8); a wrong method is a one-line error
    assert main(["export-unetr", "--run", str(run), "--out", str(tmp_path / "u.safetensors"),
                 "--out-channels", "2"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["patch_size"] == 8 and rep["modalities"] == ["t1", "t1ce", "t2", "flair"]
