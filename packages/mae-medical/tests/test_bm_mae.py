"""BM-MAE on tiny volumes (32^3, patch 8): tokenizers, Dirichlet budget, masked loss, any subset of modalities."""
import math

import pytest
import torch

from mae_core.checkpoint import from_pretrained, save_pretrained
from mae_core.errors import MaeError
from mae_core.testing import loss_falls
from mae_medical.methods.bm_mae import BMMAE


def test_per_modality_tokenizers(tiny_bm, synth_batch):
    m = tiny_bm
    assert set(m.patch_embed) == {"t1", "t1ce", "t2", "flair"}
    assert all(pe.in_chans == 1 and pe.ndim == 3 for pe in m.patch_embed.values())
    tokens, pos = m.tokenize(synth_batch)
    length = math.prod(m.grid)
    assert length == 64 and tokens.shape == (4, 4 * 64, 32) and pos.shape == (1, 4 * 64, 32)
    # the position embedding is shared between the modalities
    assert torch.equal(pos[:, :64], pos[:, 64:128])
    # changing T2 only changes the T2 slots
    b2 = dict(synth_batch)
    b2["t2"] = synth_batch["t2"] + 1.0
    t2, _ = m.tokenize(b2)
    diff = (t2 - tokens).abs().sum(-1)[0].reshape(4, 64).sum(-1)
    assert diff[2] > 0 and diff[[0, 1, 3]].abs().max() == 0
    # the encoder has no modality embedding: only the decoder does
    assert not any("modality" in n for n, _ in m.encoder.named_parameters())
    assert m.decoder_modality_embed.shape == (4, 1, 32)


def test_dirichlet_budget_exact_and_zero_possible(tiny_bm):
    m = tiny_bm
    b = 1500
    tokens = torch.zeros(b, 4 * 64, 1)
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.zeros(1, 1, 32, 32, 32) for k in m.modalities}
    mask = m.make_mask(batch, tokens, g)
    visible = (1 - mask.mask).reshape(b, 4, 64).sum(-1)  # (B, 4)
    assert torch.all(visible.sum(-1) == int(0.25 * 256))
    assert mask.ids_keep.shape == (b, 64)
    # every modality receives zero visible tokens in some samples, and the split varies
    assert torch.all((visible == 0).any(0)), visible.min(0)
    assert visible.std(0).min() > 5
    # same generator seed -> same mask
    mask2 = m.make_mask(batch, tokens, torch.Generator().manual_seed(0))
    assert torch.equal(mask.mask, mask2.mask)
    # with two present modalities the budget is 25 % of their tokens and absent ones stay fully masked
    sub = {k: batch[k] for k in ("t1", "flair")}
    mk = m.make_mask(sub, tokens[:50], g).mask.reshape(50, 4, 64)
    assert torch.all((1 - mk).sum((1, 2)) == 32) and torch.all(mk[:, 1:3] == 1)


def test_loss_only_on_masked_patches(tiny_bm, synth_batch):
    m = tiny_bm
    out = m(synth_batch, generator=torch.Generator().manual_seed(1))
    grad, = torch.autograd.grad(out.loss, out.pred)
    vis = out.mask == 0
    assert grad[vis].abs().max() == 0
    assert grad[~vis].abs().sum() > 0
    # the loss is the sum over modalities of the masked MSE
    per = [((out.pred - out.target) ** 2).mean(-1).reshape(4, 4, 64)[:, i] for i in range(4)]
    msk = out.mask.reshape(4, 4, 64)
    ref = sum((per[i] * msk[:, i]).sum() / msk[:, i].sum() for i in range(4))
    assert torch.allclose(out.loss, ref, atol=1e-5)
    assert set(out.metrics) == {"loss_t1", "loss_t1ce", "loss_t2", "loss_flair"}


def test_loss_falls(tiny_bm, synth_batch):
    first, last = loss_falls(tiny_bm, synth_batch, steps=25, lr=2e-3)
    assert last < 0.8 * first


def test_any_subset_same_weights(tmp_path, tiny_bm, synth_batch):
    save_pretrained(tiny_bm, tmp_path / "m")
    model = from_pretrained(tmp_path / "m")
    model.eval()
    for subset in (["t1"], ["t1", "t2"], ["t1", "t1ce", "flair"], ["t1", "t1ce", "t2", "flair"]):
        b = {k: synth_batch[k] for k in subset}
        f = model.encode(b)
        assert f.shape == (4, 32) and torch.isfinite(f).all()
        out = model(b, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out.loss)
        assert set(out.metrics) == {f"loss_{k}" for k in subset}
        rec = model.reconstruct(b)
        assert all(rec[k].shape == (4, 1, 32, 32, 32) for k in model.modalities)
    with pytest.raises(MaeError, match="not known"):
        model.encode({"pd": synth_batch["t1"]})
    with pytest.raises(MaeError, match="different shapes"):
        model.encode({"t1": synth_batch["t1"], "t2": synth_batch["t2"][..., :16]})


@pytest.mark.parametrize("subset", [["t2"], ["t1", "flair"], ["t1", "t1ce", "t2"]])
def test_finetune_with_1_2_3_modalities_from_one_checkpoint(tmp_path, tiny_bm, subset):
    from mae_core.eval import finetune
    from mae_core.train import TrainConfig
    from mae_medical.data.synthetic_brain import SyntheticBrain, SyntheticBrainConfig

    ckpt = tmp_path / "pre"
    save_pretrained(tiny_bm, ckpt)
    model = from_pretrained(ckpt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = SyntheticBrainConfig(image_size=32, num_train=8, num_test=4, modalities=subset)
    train, test = SyntheticBrain(cfg, "train"), SyntheticBrain(cfg, "test")
    clf, summary = finetune(model, train, test, 3, TrainConfig(epochs=1, batch_size=4, lr=1e-3, progress=False,
                                                               device="cpu", warmup_epochs=0),
                            layer_decay=0.75, drop_path=0.1)
    assert 0.0 <= summary["test_acc"] <= 1.0 and summary["steps"] == 2
    after = clf.backbone.state_dict()
    # only the present modalities' projections are trained; the others are untouched
    for m in ["t1", "t1ce", "t2", "flair"]:
        changed = not torch.equal(before[f"patch_embed.{m}.proj.weight"], after[f"patch_embed.{m}.proj.weight"])
        assert changed == (m in subset), m


def test_fused_visible_embedding_equals_conv_path(tiny_bm, synth_batch):
    """Pre-training embeds only the visible patches, grouped by modality, with the convolutions' weights as matrices:
    the tokens, the loss and the gradients must equal the plain path (every modality's Conv3d on the whole volume,
    then the visible tokens gathered)."""
    m = tiny_bm
    # the projection as a matrix product gives the convolution's tokens
    for name in m.modalities:
        conv_tokens = m.patch_embed[name](synth_batch[name])
        tok, _ = m.tokenize({name: synth_batch[name]})
        i = m.modalities.index(name)
        assert torch.allclose(tok[:, i * 64:(i + 1) * 64], conv_tokens, atol=1e-5)
    out = m(synth_batch, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(out.loss, [pe.proj.weight for pe in m.patch_embed.values()])

    # reference: conv on every modality, gather the visible tokens, generic encoder / decoder, per-modality masked MSE
    conv = torch.cat([m.patch_embed[n](synth_batch[n]) for n in m.modalities], 1)
    mask = m.make_mask(synth_batch, conv, torch.Generator().manual_seed(3))
    assert torch.equal(mask.mask, out.mask)
    pos = m.pos_embed.repeat(1, 4, 1)
    latent = m.forward_encoder(conv, pos, mask)
    pred = m.forward_decoder(latent, mask, synth_batch)
    from mae_core.layers import patchify
    from mae_core.losses import masked_mse
    target = torch.cat([patchify(synth_batch[n], 8) for n in m.modalities], 1)
    ref = sum(masked_mse(pred[:, i * 64:(i + 1) * 64], target[:, i * 64:(i + 1) * 64], mask.mask[:, i * 64:(i + 1) * 64])
              for i in range(4))
    assert torch.allclose(out.loss, ref, atol=1e-5) and torch.allclose(out.pred, pred, atol=1e-5)
    ref_grads = torch.autograd.grad(ref, [pe.proj.weight for pe in m.patch_embed.values()])
    for a, r in zip(grads, ref_grads):
        assert torch.allclose(a, r, atol=1e-5) and r.abs().sum() > 0
