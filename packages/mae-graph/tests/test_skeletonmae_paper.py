"""SkeletonMAE as the paper describes it (the authors' code is not released): SCE loss with beta = 2, masks of whole
body parts, joints projected to 64 dimensions with [MASK] in that space, STRL fine-tuning model."""
import torch

from mae_graph.data.skeleton import MSR20, NTU25, SkeletonActionsConfig, make_skeleton_actions
from mae_graph.methods.skeletonmae import MultiScaleTemporal, SkeletonMAE, SkeletonMAEConfig


def model(**kw):
    return SkeletonMAE(SkeletonMAEConfig(**{"num_hidden": 16, "frames": 8, **kw}))


def test_defaults_are_the_papers():
    c = SkeletonMAEConfig()
    assert (c.loss_fn, c.alpha_l, c.embed_dim, c.mask_strategy, c.head, c.num_layers) == ("sce", 2.0, 64, "parts",
                                                                                      "strl", 3)


def test_parts_masking_hides_one_or_more_whole_parts_as_drawn():
    m = model()
    mask, by_part = m.make_mask(400, torch.Generator().manual_seed(1))
    parts = [set(p) for p in NTU25.parts.values()]
    counts = []
    for row in mask.bool():
        masked = set(row.nonzero().flatten().tolist())
        whole = [p for p in parts if p <= masked]
        assert all(not (p & masked) or p <= masked for p in parts)  # no part cut
        assert masked == set().union(*whole)
        counts.append(len(whole))
    assert set(counts) == {1, 2} and by_part.all()
    assert 0.4 < counts.count(1) / len(counts) < 0.6  # k ~ U{1, 2}
    # by hand: the same draws in the same order
    g = torch.Generator().manual_seed(1)
    k = (torch.rand(400, 1, generator=g) * 2).long() + 1
    rank = torch.rand(400, 6, generator=g).argsort(1).argsort(1)
    assert torch.equal(mask.bool(), rank[:, NTU25.part_index()] < k)
    m3 = model(layout="msr20", max_mask_parts=9)  # never all six parts
    mask3, _ = m3.make_mask(300, torch.Generator().manual_seed(0))
    assert mask3.sum(1).max() < MSR20.num_joints and mask3.sum(1).min() >= 2


def test_mask_token_lives_in_the_64_dim_joint_embedding():
    m = model()
    assert m.joint_embed.weight.shape == (64, 3) and m.enc_mask_token.shape == (1, 1, 64)
    x = make_skeleton_actions(SkeletonActionsConfig(num_train=4, num_test=2, frames=8), "train").x[:3]
    seen = {}

    def hook(mod, args):
        seen.setdefault("in", args[0].detach())

    m.encoder.register_forward_pre_hook(hook)
    out = m({"skeleton": x}, generator=torch.Generator().manual_seed(0))
    enc_in = seen["in"].reshape(3, 8, 25, 64)
    mt = out.mask.bool()[:, None, :].expand(3, 8, 25)
    assert torch.equal(enc_in[mt], m.enc_mask_token.detach().expand(int(mt.sum()), 1, 64)[:, 0])
    want = m.joint_embed(x.permute(0, 2, 3, 1))[~mt]
    assert torch.allclose(enc_in[~mt], want.detach(), atol=1e-6)


def test_loss_is_the_scaled_cosine_error_beta_2_on_masked_joints():
    m = model()
    x = make_skeleton_actions(SkeletonActionsConfig(num_train=4, num_test=2, frames=8), "train").x[:4]
    out = m({"skeleton": x}, generator=torch.Generator().manual_seed(0))
    sel = out.mask.bool()[:, None, :].expand(4, 8, 25)
    p, t = out.pred.permute(0, 2, 3, 1)[sel], x.permute(0, 2, 3, 1)[sel]
    cos = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1))
    assert torch.allclose(out.loss, ((1 - cos) ** 2).mean(), atol=1e-5)


def test_strl_shares_the_encoder_over_persons_and_stacks_three_blocks():
    torch.manual_seed(0)
    m = model().eval()
    assert len(m.mstp) == 3 and len(m.encoder.layers) == 3
    a, b = torch.randn(2, 3, 8, 25), torch.randn(2, 3, 8, 25)
    both = m.encode({"skeleton": torch.stack([a, b], -1)}, pool="mean")
    want = (m.encode({"skeleton": a}, pool="mean") + m.encode({"skeleton": b}, pool="mean")) / 2
    assert both.shape == (2, 16) and torch.allclose(both, want, atol=1e-5)
    assert m.feature_dim("mean") == 16


def test_multi_scale_temporal_block_receptive_fields():
    blk = MultiScaleTemporal(8).eval()
    assert [br[-1].dilation for br in blk.branches[:2]] == [(1, 1), (2, 1)]
    assert isinstance(blk.branches[2][-1], torch.nn.MaxPool2d)
    x = torch.randn(2, 8, 10, 5)
    assert blk(x).shape == x.shape
    # a change at frame 5 reaches frames 3..7 at most (dilation 2, kernel 3), nothing further
    y0 = blk(x)
    x2 = x.clone()
    x2[:, :, 5] += 1.0
    changed = (blk(x2) - y0).abs().amax(dim=(0, 1, 3)) > 1e-6
    assert changed.nonzero().flatten().tolist() == [3, 4, 5, 6, 7]
