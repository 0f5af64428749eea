import pytest

from mae_core.testing import single_thread
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread (mae_core.testing.single_thread)."""
    with single_thread():
        yield
