"""Files and folders we write get the modes an ordinary open / mkdir would give them (the umask decides)."""
import os
import stat

import pytest
import torch

from mae_core.checkpoint import atomic_write_text, current_umask, save_checkpoint, save_pretrained
from mae_core.models.image_mae import ImageMAE
from mae_core.testing import tiny_image_cfg


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int):
        os.umask(mask)
    yield set_mask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750),
                                                      (0o077, 0o600, 0o700)])
def test_saved_files_and_checkpoint_folders_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert current_umask() == mask
    torch.manual_seed(0)
    model = ImageMAE(tiny_image_cfg())
    save_pretrained(model, tmp_path / "run")
    assert _mode(tmp_path / "run" / "model.safetensors") == file_mode
    assert _mode(tmp_path / "run" / "config.json") == file_mode
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000001", model, state={"step": 1})
    assert _mode(ckpt) == dir_mode
    assert all(_mode(f) == file_mode for f in ckpt.iterdir())
    atomic_write_text(tmp_path / "run" / "notes.txt", "x")
    assert _mode(tmp_path / "run" / "notes.txt") == file_mode
    assert current_umask() == mask  # reading it left it unchanged
