import numpy as np
import pytest

from mae_3d.data.shapes import _ARRANGEMENT_GRAPHS, ARRANGEMENTS, Shapes3D, Shapes3DConfig


def test_arrangements_share_their_parts():
    """Every arrangement is 4 balls and 3 rods of the same (unit) length; only the placement differs."""
    layouts = set()
    for name in ARRANGEMENTS:
        centres, rods = _ARRANGEMENT_GRAPHS[name]
        c = np.asarray(centres, dtype=float)
        assert len(c) == 4 and len(rods) == 3
        np.testing.assert_allclose([np.linalg.norm(c[i] - c[j]) for i, j in rods], 1.0, atol=1e-12)
        # no two classes have the same set of pairwise ball distances (they are different arrangements)
        d = np.linalg.norm(c[:, None] - c[None], axis=-1)
        layouts.add(tuple(np.round(np.sort(d[np.triu_indices(4, 1)]), 6)))
    assert len(layouts) == len(ARRANGEMENTS)


def test_arrangements_dataset_is_deterministic_and_balanced():
    cfg = Shapes3DConfig(variant="arrangements", num_points=128, train_per_class=2, test_per_class=1, seed=3)
    a, b = Shapes3D(cfg, "train"), Shapes3D(cfg, "test")
    assert a.classes == ARRANGEMENTS and len(a) == 16 and len(b) == 8
    assert a[0]["points"].shape == (128, 3) and np.isfinite(a.points.numpy()).all()
    from mae_3d.data import shapes
    shapes._CACHE.clear()
    assert (Shapes3D(cfg, "train").points == a.points).all()
    assert not (a.points[0] == b.points[0]).all()


def test_unknown_variant_is_a_config_error():
    from mae_core.errors import ConfigError
    with pytest.raises(ConfigError, match="variant"):
        Shapes3D(Shapes3DConfig(variant="nope"), "train")
