"""Point-BERT: the dVAE tokenizer's schedules and KL, the block mask, [MASK] tokens in the sequence, the targets from
the frozen dVAE, the momentum / queue updates, and the two-stage pretraining through the library."""
import math

import pytest
import torch
import torch.nn.functional as F

import mae_core
from mae_3d.methods.point_bert import PointBERT, PointBERTConfig, block_mask
from mae_3d.methods.point_dvae import (PointDVAE, PointDVAEConfig, gumbel_softmax, gumbel_temperature, kl_to_uniform,
                                       kl_weight)

DVAE = dict(num_groups=8, group_size=16, pointnet_dims=[16, 16, 32], encoder_dims=32, num_tokens=16)


def batch_of(ds, n=6):
    return {"points": torch.stack([ds[i]["points"] for i in range(n)])}


def test_gumbel_temperature_and_kl_weight_at_given_progress():
    """Cosine 1 -> 0.0625 over the first half; KL weight 0 until 0.05, cosine to 0.1 at 0.55 (hand values)."""
    c = PointDVAEConfig()
    temps = [gumbel_temperature(p, c) for p in (0.0, 0.25, 0.5, 0.8, 1.0)]
    assert temps == pytest.approx([1.0, 0.0625 + 0.9375 / 2, 0.0625, 0.0625, 0.0625])
    # a quarter of the way: end + (start - end) (1 + cos(pi / 4)) / 2
    assert gumbel_temperature(0.125, c) == pytest.approx(0.0625 + 0.9375 * (1 + math.sqrt(0.5)) / 2)
    weights = [kl_weight(p, c) for p in (0.0, 0.04, 0.05, 0.30, 0.55, 0.9)]
    assert weights == pytest.approx([0.0, 0.0, 0.0, 0.05, 0.1, 0.1])
    # the reference's iteration schedule (tau over 100k iterations, KL from 10k to 110k) at its own fractions
    ref = PointDVAEConfig(temp_until=100 / 197, kl_from=10 / 197, kl_until=110 / 197)
    assert gumbel_temperature(50 / 197, ref) == pytest.approx(0.0625 + 0.9375 / 2)
    assert kl_weight(60 / 197, ref) == pytest.approx(0.05)


def test_the_model_reads_the_trainer_progress(tiny_shapes):
    torch.manual_seed(0)
    model = PointDVAE(PointDVAEConfig(**DVAE, decoder_dims=16, tokens_dims=16, dgcnn_width=4, decoder_hidden=16))
    batch = batch_of(tiny_shapes[0])
    for p, tau, w in ((0.0, 1.0, 0.0), (0.25, 0.53125, 0.03455), (0.3, None, 0.05), (0.7, 0.0625, 0.1)):
        model.set_progress(p)
        out = model(batch, generator=torch.Generator().manual_seed(0))
        if tau is not None:
            assert out.metrics["temperature"] == pytest.approx(tau)
        assert out.metrics["kl_weight"] == pytest.approx(w, abs=1e-3)
        rec = out.metrics["chamfer_coarse"] + out.metrics["chamfer_fine"]
        assert float(out.loss.detach()) == pytest.approx(float(rec + w * out.metrics["kl"]), rel=1e-3, abs=1e-4)


def test_gumbel_softmax_from_the_generator_and_kl_is_the_reference_kl_div():
    logits = torch.randn(3, 5, 16)
    a = gumbel_softmax(logits, 0.5, torch.Generator().manual_seed(3))
    b = gumbel_softmax(logits, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.allclose(a.sum(-1), torch.ones(3, 5))
    # at a tiny temperature the soft sample is the one-hot of argmax(logits + the same Gumbel noise)
    hard = gumbel_softmax(logits, 1e-4, torch.Generator().manual_seed(3))
    assert torch.equal(hard.argmax(-1), a.argmax(-1)) and bool((hard.amax(-1) > 0.99).all())
    # the reference: F.kl_div(log mean_g softmax, log uniform, None, None, 'batchmean', log_target=True)
    log_q = torch.log(F.softmax(logits, -1).mean(1))
    log_u = torch.log(torch.tensor([1 / 16])).expand_as(log_q)
    want = F.kl_div(log_q, log_u, None, None, "batchmean", log_target=True)
    assert float(kl_to_uniform(logits)) == pytest.approx(float(want), rel=1e-5)
    assert float(kl_to_uniform(torch.zeros(2, 4, 16))) == pytest.approx(0.0, abs=1e-7)  # uniform: no KL


def test_block_mask_ratio_range_and_contiguity():
    g = 64
    centers = torch.randn(200, g, 3)
    mask = block_mask(centers, 0.25, 0.45, torch.Generator().manual_seed(0))
    counts = mask.sum(1)
    assert int(counts.min()) >= int(0.25 * g) and int(counts.max()) <= int(0.45 * g)
    assert len(counts.unique()) > 5  # the ratio is drawn per cloud
    for b in range(20):  # the masked groups are the nearest ones to one of them (a block around a centre)
        m = mask[b]
        d = torch.cdist(centers[b][m], centers[b])  # (masked, G)
        inside = (d[:, m].amax(1) <= d[:, ~m].amin(1))
        assert bool(inside.any())


def tiny_bert(**kw):
    base = dict(**DVAE, embed_dim=32, depth=1, num_heads=2, cls_dim=16, queue_size=8, drop_path=0.0,
                teacher="random", augment=False)
    base.update(kw)
    torch.manual_seed(0)
    return PointBERT(PointBERTConfig(**base))


def test_mask_tokens_stay_in_the_sequence(tiny_shapes):
    model = tiny_bert(mixing=False)
    batch = batch_of(tiny_shapes[0])
    seen = []
    model.q.encoder.register_forward_hook(lambda mod, args, out: seen.append((args[0], out.shape)))
    out = model(batch, generator=torch.Generator().manual_seed(1))
    x_in, shape = seen[0]
    assert shape == (6, 1 + 8, 32)  # cls + every group: nothing dropped
    mask = out.mask.bool()
    assert bool(mask.any()) and not bool(mask.all())
    nb, centers = model.group(model.points(batch))
    tok = model.q.tokens(nb, mask)
    assert torch.allclose(tok[mask], model.q.mask_token[0].expand(int(mask.sum()), -1))
    assert torch.allclose(tok[~mask], model.q.reduce_dim(model.q.patch_embed(nb))[~mask], atol=1e-6)
    assert torch.allclose(x_in[:, 1:], tok)  # what enters the encoder after the cls token


def test_targets_are_the_frozen_dvae_argmax_and_the_loss_is_ce_on_masked(tiny_shapes):
    model = tiny_bert(mixing=False)
    batch = batch_of(tiny_shapes[0])
    out = model(batch, generator=torch.Generator().manual_seed(1))
    with torch.random.fork_rng(devices=[]):  # the random-weight dVAE built the same way, independently
        torch.manual_seed(0)
        dvae = PointDVAE(PointDVAEConfig(**DVAE)).eval()
    nb, centers = model.group(model.points(batch))
    assert torch.equal(out.target, dvae.logits(nb, centers).argmax(-1))
    mask = block_mask(centers, 0.25, 0.45, torch.Generator().manual_seed(1))
    assert torch.equal(out.mask.bool(), mask)
    logits = model.q.lm_head(model.q(nb, centers, mask)[:, 1:])
    assert float(out.loss.detach()) == pytest.approx(float(F.cross_entropy(logits[mask], out.target[mask]).detach()), rel=1e-5)
    out.loss.backward()  # the teacher: no gradients, not in the student's weights
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.model.parameters())
    assert not any(k.startswith("teacher") for k in model.state_dict())


def test_mixing_momentum_and_queue(tiny_shapes):
    model = tiny_bert(mixing=True, queue_size=8)
    batch = batch_of(tiny_shapes[0])
    out = model(batch, generator=torch.Generator().manual_seed(1))
    assert {"mpm", "mpm_mixed", "mixing"} <= set(out.metrics)
    assert float(out.loss.detach()) == pytest.approx(float(out.metrics["mpm"] + out.metrics["mpm_mixed"]
                                                  + out.metrics["mixing"]), rel=1e-5)
    keys = model.pending_keys.clone()
    out.loss.backward()
    with torch.no_grad():
        for p in model.q.parameters():
            p.add_(0.1)
    before = [p.clone() for p in model.k.module.parameters()]
    model.set_progress(0.1)  # the trainer's pre-forward hook: keys enqueued, then k <- 0.999 k + 0.001 q
    assert torch.allclose(model.queue.ordered()[-6:], keys) and int(model.queue.ptr) == 6
    for b, k, q in zip(before, model.k.module.parameters(), model.q.parameters()):
        assert torch.allclose(k, 0.999 * b + 0.001 * q)
    assert model.pending_keys is None


def test_two_stages_through_the_library(tmp_path, monkeypatch):
    """point-dvae saves a run; point-bert reads it with --teacher (the dVAE's fields and encoder copied), and without
    a teacher the library trains the default dVAE first and caches it."""
    monkeypatch.setenv("MAE_TEACHER_CACHE", str(tmp_path / "cache"))
    data = dict(num_points=64, num_classes=2, train_per_class=4, test_per_class=1)
    dvae = mae_core.pretrain("point-dvae", out=str(tmp_path / "dvae"), epochs=1, batch_size=4, progress=False,
                             **data, **DVAE, decoder_dims=16, tokens_dims=12, dgcnn_width=4, decoder_hidden=16)
    assert (dvae.path / "pictures" / "tokens.png").is_file()  # groups coloured by code id, decoded groups
    small = dict(embed_dim=32, depth=1, num_heads=2, cls_dim=16, queue_size=8, drop_path=0.0)
    model = mae_core.create_model("point-bert", teacher=str(dvae.path), num_tokens=64, **small)
    assert model.config.num_tokens == 16 and model.config.teacher_sha256  # from the teacher's config, hash pinned
    assert all(torch.equal(a, b) for a, b in zip(model.q.patch_embed.state_dict().values(),
                                                 dvae.model.patch_embed.state_dict().values()))
    run = mae_core.pretrain("point-bert", out=str(tmp_path / "bert"), epochs=1, batch_size=4, progress=False,
                            teacher_epochs=1, **data, **DVAE, **small)
    teacher = run.model.config.teacher
    assert teacher.startswith(str((tmp_path / "cache").resolve())) and (tmp_path / "cache").is_dir()
    assert run.summary["steps"] == 2
    # fine-tuning reads the student through encode (max + mean) and sets its drop path
    ft = mae_core.finetune(run, out=str(tmp_path / "ft"), epochs=1, batch_size=4, progress=False, drop_path=0.2)
    assert 0.0 <= ft["test_acc"] <= 1.0


def test_moco_term_and_bad_configs(tiny_shapes):
    """--moco (off in the released config) adds InfoNCE between the cls projection and the key, queue negatives."""
    from mae_core.errors import ConfigError
    from mae_core.losses import info_nce

    model = tiny_bert(mixing=False, moco=True)
    assert model.k is not None
    batch = batch_of(tiny_shapes[0])
    out = model(batch, generator=torch.Generator().manual_seed(1))
    assert float(out.loss.detach()) == pytest.approx(float(out.metrics["mpm"] + out.metrics["moco"]), rel=1e-5)
    nb, centers = model.group(model.points(batch))
    g = torch.Generator().manual_seed(1)
    q = model.q.cls_head(model.q(nb, centers, block_mask(centers, 0.25, 0.45, g))[:, 0])
    k = model.k.module.cls_head(model.k(nb, centers, block_mask(centers, 0.25, 0.45, g))[:, 0])
    want = info_nce(q, k, 0.07, negatives=model.queue.features)
    assert float(out.metrics["moco"]) == pytest.approx(float(want.detach()), rel=1e-5)
    with pytest.raises(ConfigError, match="mask_max"):
        mae_core.create_model("point-bert", teacher="random", mask_min=0.5, mask_max=0.4)
    with pytest.raises(ConfigError, match="group_size must be a multiple of 4"):
        mae_core.create_model("point-dvae", group_size=30)
