"""Images stored as arrays in one ``.npz`` file: the MedMNIST layout (``train_images``, ``train_labels``,
``val_*``, ``test_*``) or plain ``images`` / ``labels`` (then a deterministic split). Values may be uint8 (0-255) or
float; layouts (N, H, W), (N, H, W, C) or (N, C, H, W). Non-finite values are refused with the file, array and
sample index."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import field
from ..errors import DataError
from .safe_pickle import numpy_load_error


@dataclass
class ArrayImageConfig:
    path: str | None = field(None, ".npz file with train_images / train_labels (MedMNIST) or images / labels")
    image_size: int = field(32, "images are resized to this side", ge=1)
    val_fraction: float = field(0.2, "held-out fraction when the file has no test split", ge=0, lt=1)
    seed: int = field(0, "seed of the split when the file has no test split")


def _to_nchw(a: np.ndarray, path: str, key: str) -> torch.Tensor:
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        a = a.transpose(0, 3, 1, 2)
    elif a.ndim != 4:
        raise DataError(f"{path}: array {key!r} has shape {a.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    x = torch.from_numpy(np.ascontiguousarray(a))
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    x = x.float()
    bad = ~torch.isfinite(x.flatten(1)).all(1)
    if bad.any():
        raise DataError(f"{path}: array {key!r} contains NaN or inf (sample {int(bad.nonzero()[0])})")
    return x


def _member(data, path, key: str) -> np.ndarray:
    """One array of an open ``.npz`` (pickles refused: object arrays are a one-line error)."""
    try:
        return data[key]
    except Exception as e:
        raise numpy_load_error(path, e, ".npz file") from None


class ArrayImageDataset(Dataset):
    def __init__(self, config: ArrayImageConfig, split: str = "train"):
        self.config = c = config
        path = c.path
        if not path:
            raise DataError("no .npz file given (use --data FILE.npz)")
        if not os.path.isfile(path):
            raise DataError(f"{path}: file does not exist")
        try:
            data = np.load(path, allow_pickle=False)
            keys = set(data.files)
        except Exception as e:  # zipfile / value errors for corrupt files
            raise numpy_load_error(path, e, ".npz file") from None
        want = "train" if split == "train" else ("test" if "test_images" in keys else "val")
        if f"{want}_images" in keys:
            key = f"{want}_images"
            images, labels = _member(data, path, key), _member(data, path, f"{want}_labels")
        elif "images" in keys and "labels" in keys:
            images, labels, key = _member(data, path, "images"), _member(data, path, "labels"), "images"
            _to_nchw(images, path, key)  # checks every sample (indices of the file, before splitting)
            g = torch.Generator().manual_seed(c.seed)
            held = (torch.rand(len(images), generator=g) < c.val_fraction).numpy()
            sel = ~held if split == "train" else held
            images, labels = images[sel], labels[sel]
        else:
            raise DataError(f"{path}: expected arrays train_images/train_labels or images/labels, found {sorted(keys)}")
        x = _to_nchw(images, path, key)
        if x.shape[-1] != c.image_size or x.shape[-2] != c.image_size:
            x = F.interpolate(x, size=(c.image_size, c.image_size), mode="bilinear", align_corners=False)
        self.images = (x - 0.5) / 0.5
        y = torch.from_numpy(np.asarray(labels)).long()
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        self.multilabel = y.ndim == 2
        self.labels = y
        self.num_classes = int(y.shape[1]) if self.multilabel else int(y.max()) + 1
        self.in_chans = x.shape[1]
        self.mean, self.std = (0.5,) * self.in_chans, (0.5,) * self.in_chans

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "index": i}
