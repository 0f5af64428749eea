import pytest
import torch

from mae_core.checkpoint import load_foreign
from mae_core.errors import MaeError
from mae_core.interop import from_hf_vitmae, from_mae_release, to_mae_release, to_timm
from mae_core.models.image_mae import ImageMAE, ImageMAEConfig
from mae_core.testing import MarkerPayload


def _small(**kw):
    torch.manual_seed(0)
    cfg = dict(img_size=32, patch_size=16, embed_dim=384, depth=2, num_heads=6, decoder_embed_dim=64,
               decoder_depth=1, decoder_num_heads=4)
    cfg.update(kw)
    return ImageMAE(ImageMAEConfig(**cfg))


def test_export_to_timm_vit_small_same_features():
    import timm  # noqa: F401  (a dev dependency: never skipped)
    model = _small().eval()
    vit = to_timm(model, "vit_small_patch16_224").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = model.forward_features({"image": x})
        theirs = vit.forward_features(x)
    assert (ours - theirs).abs().max().item() <= 1e-5


def _tiny_hf_vitmae():
    import transformers  # a dev dependency: never skipped
    cfg = transformers.ViTMAEConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=256, decoder_hidden_size=32,
                                    decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
                                    decoder_intermediate_size=128, mask_ratio=0.75, layer_norm_eps=1e-6,
                                    hidden_act="gelu")
    torch.manual_seed(0)
    return transformers.ViTMAEForPreTraining(cfg).eval()


def _hf_sincos(dim: int, grid: int) -> torch.Tensor:
    """The table transformers fills in for a pretrained ViTMAE: its own 2-D builder, halves swapped as the
    original MAE code laid them out (modeling_vit_mae.initialize_weights)."""
    from transformers.models.vit_mae import modeling_vit_mae as m

    if not hasattr(m, "build_2d_sinusoidal_position_embedding"):  # transformers < 5: the numpy builder, same layout
        return torch.from_numpy(m.get_2d_sincos_pos_embed(dim, grid, add_cls_token=True)).float()[None]
    t = m.build_2d_sinusoidal_position_embedding(height=grid, width=grid, embed_dim=dim, cls_token=True)
    return torch.cat([t[..., dim // 2:], t[..., :dim // 2]], -1)[None]


def test_import_fresh_hf_vitmae_builds_sincos_and_same_reconstruction():
    """A freshly constructed transformers 5 ViTMAEForPreTraining holds all-zero position tables: the import builds
    the sin-cos tables, and the model reconstructs like the HF model once HF's own tables are filled in."""
    from mae_core.layers import sincos_pos_embed

    hf = _tiny_hf_vitmae()
    with torch.no_grad():  # transformers >= 5 constructs them all-zero (older versions fill them in): hold zeros
        hf.vit.embeddings.position_embeddings.zero_()
        hf.decoder.decoder_pos_embed.zero_()
    ours = from_hf_vitmae(hf).eval()
    assert torch.equal(ours.pos_embed[0], sincos_pos_embed(64, (4, 4)))
    assert torch.equal(ours.decoder.pos_embed[0], sincos_pos_embed(32, (4, 4)))
    with torch.no_grad():  # the tables a released checkpoint carries, as transformers builds them
        hf.vit.embeddings.position_embeddings.copy_(_hf_sincos(64, 4))
        hf.decoder.decoder_pos_embed.copy_(_hf_sincos(32, 4))
    x = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_hf = hf(pixel_values=x, noise=noise)
        out = ours({"image": x, "mask": out_hf.mask})
    assert torch.equal(out.mask, out_hf.mask)
    assert (out.pred - out_hf.logits).abs().max().item() < 1e-4
    assert from_hf_vitmae(hf).pos_embed.equal(ours.pos_embed)  # filled tables are accepted as they are


def test_import_hf_vitmae_refuses_a_learned_position_table():
    hf = _tiny_hf_vitmae()
    with torch.no_grad():
        hf.decoder.decoder_pos_embed.normal_()
    with pytest.raises(MaeError, match="decoder.decoder_pos_embed.*sin-cos"):
        from_hf_vitmae(hf)


def test_mae_release_round_trip(tmp_path):
    model = _small(img_size=32, patch_size=8, embed_dim=64, num_heads=1, decoder_embed_dim=32,
                   decoder_num_heads=16).eval()
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": to_mae_release(model)}, path)
    loaded = from_mae_release(path, num_heads=1, decoder_num_heads=16, img_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 16)
    mask[:, ::2] = 1
    with torch.no_grad():
        assert torch.allclose(model({"image": x, "mask": mask}).pred, loaded({"image": x, "mask": mask}).pred, atol=1e-6)


def test_pickle_that_runs_code_is_refused(tmp_path):
    """torch.load only with weights_only=True: a checkpoint whose unpickling runs code is a one-line refusal, the
    code never runs; a plain state dict still loads."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(2)}, "payload": MarkerPayload(marker)}, path)
    with pytest.raises(MaeError, match="refused to load") as err:
        load_foreign(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file is live: full unpickling runs the payload
    assert marker.exists()
    torch.save({"state_dict": {"w": torch.arange(3.0)}}, tmp_path / "ok.pth")
    assert torch.equal(load_foreign(tmp_path / "ok.pth")["w"], torch.arange(3.0))
