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


def test_best_mask_seed_takes_the_highest_score_and_the_first_on_ties():
    from mae_core.viz import MASK_SEED_TRIES, best_mask_seed

    scores = {3: 0.2, 5: 0.9, 7: 0.9, 9: -1.0}
    assert best_mask_seed(lambda s: scores.get(s, 0.0), first=2, tries=8) == 5  # 7 ties with 5: the first wins
    assert best_mask_seed(lambda s: -abs(s - 20), first=10) == 20 and MASK_SEED_TRIES == 16
    assert best_mask_seed(lambda s: -s, first=4, tries=1) == 4
