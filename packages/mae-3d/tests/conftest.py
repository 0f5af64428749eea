import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # the test machine is shared: small ops are far faster on one thread than on oversubscribed ones
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_shapes():
    from mae_3d.data.shapes import Shapes3D, Shapes3DConfig

    cfg = Shapes3DConfig(num_points=256, train_per_class=10, test_per_class=6, num_classes=5, seed=0)
    return Shapes3D(cfg, "train"), Shapes3D(cfg, "test")
