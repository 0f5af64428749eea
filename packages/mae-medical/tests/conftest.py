import pytest
import torch

from mae_medical.methods.bm_mae import BMMAE, BMMAEConfig


def tiny_cfg(**kw) -> BMMAEConfig:
    base = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32,
                decoder_depth=1, decoder_num_heads=2)
    base.update(kw)
    return BMMAEConfig(**base)


@pytest.fixture
def tiny_bm():
    torch.manual_seed(0)
    return BMMAE(tiny_cfg())


@pytest.fixture
def tiny_cfg_factory():
    return tiny_cfg


@pytest.fixture
def synth_batch():
    from mae_medical.data.synthetic_brain import SyntheticBrain, SyntheticBrainConfig
    from mae_core.data.utils import collate_dicts

    ds = SyntheticBrain(SyntheticBrainConfig(image_size=32, num_train=4, num_test=2))
    return collate_dicts([ds[i] for i in range(4)])
