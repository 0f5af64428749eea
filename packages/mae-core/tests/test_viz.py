import torch

from mae_core import create_model
from mae_core.layers.patch import patchify
from mae_core.viz import image_reconstruction, save_image_reconstruction

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
            decoder_num_heads=2)


def test_reconstruction_keeps_the_raw_prediction_beside_the_denormalised_one():
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    for norm in (False, True):
        torch.manual_seed(0)
        m = create_model("image-mae", norm_pix_loss=norm, **TINY)
        orig, masked, recon, pasted, undone, mask, raw = image_reconstruction(m, images, 4)
        assert undone is norm
        if not norm:
            assert torch.equal(recon, raw)
            continue
        # per patch: reconstruction = raw * sqrt(var + 1e-6) + mean, with the true patch's statistics
        t = patchify(images, 4)
        mean, var = t.mean(-1, keepdim=True), t.var(-1, keepdim=True)
        expect = patchify(raw, 4) * (var + 1e-6).sqrt() + mean
        assert torch.allclose(patchify(recon, 4), expect, atol=1e-5)
        assert not torch.allclose(recon, raw)


def test_picture_has_a_prediction_alone_column_when_targets_were_normalised(tmp_path):
    from PIL import Image

    widths = {}
    for norm in (False, True):
        torch.manual_seed(0)
        m = create_model("image-mae", norm_pix_loss=norm, **TINY)
        p = save_image_reconstruction(m, torch.rand(2, 3, 16, 16), tmp_path / f"{norm}.png")
        widths[norm] = Image.open(p).size[0]
    assert widths[True] > 1.15 * widths[False]  # five columns instead of four
