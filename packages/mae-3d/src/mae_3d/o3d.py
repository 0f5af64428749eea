"""The one place that imports Open3D.

``import open3d`` needs ``libusb-1.0.so.0``, which a fresh machine may lack; the ``libusb-package`` wheel ships it, and
loading it globally before the import is enough. Everything in this package gets Open3D through :func:`o3d`, lazily,
so importing ``mae_3d`` (and its CLI) stays fast.
"""
from __future__ import annotations

import ctypes
import functools

from mae_core.errors import MaeError


@functools.lru_cache(maxsize=1)
def o3d():
    """The ``open3d`` module, after loading the bundled libusb with RTLD_GLOBAL when it is available."""
    try:
        import libusb_package

        path = libusb_package.get_library_path()
        if path:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except (ImportError, OSError):
        pass  # the system may provide libusb itself
    try:
        import open3d
    except (ImportError, OSError) as e:
        raise MaeError(f"cannot import open3d ({e}); install open3d and libusb-package") from None
    open3d.utility.set_verbosity_level(open3d.utility.VerbosityLevel.Error)
    return open3d
