from .arrays import ArrayImageConfig, ArrayImageDataset
from .folder import ImageFolderConfig, ImageFolderDataset, check_dir, to_8bit, verify_images
from .safe_pickle import PLANETOID_GLOBALS, load_npy, numpy_load_error, safe_unpickle
from .shapes import ShapesConfig, SyntheticShapes, generate_shapes
from .utils import collate_dicts, subset_fraction

__all__ = ["ArrayImageConfig", "ArrayImageDataset", "ImageFolderConfig", "ImageFolderDataset", "check_dir", "ShapesConfig", "SyntheticShapes",
           "generate_shapes", "collate_dicts", "subset_fraction", "PLANETOID_GLOBALS", "load_npy", "numpy_load_error",
           "safe_unpickle", "to_8bit", "verify_images"]
