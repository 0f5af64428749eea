import pytest
import torch

from mae_core.models.image_mae import ImageMAE
from mae_core.testing import tiny_image_cfg


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return ImageMAE(tiny_image_cfg())
