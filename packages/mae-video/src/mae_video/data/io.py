"""Reading video with PyAV (``av``, which bundles FFmpeg; torchvision's video readers are deprecated) and folders of
frame images, plus frame sampling (``num_frames`` with a stride) and resize + crop."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mae_core.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".gif", ".mov", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())


def frame_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def probe_video(path: str | os.PathLike) -> int:
    """Number of frames of a video file or frame folder (decodes the file when the container does not say);
    raises DataError naming the file when it cannot be read or has no video frames."""
    path = Path(path)
    if path.is_dir():
        n = len(frame_files(path))
        if n == 0:
            raise DataError(f"{path}: frame folder has no images")
        return n
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream")
            stream = container.streams.video[0]
            n = 0
            for _ in container.decode(stream):
                n += 1
    except DataError:
        raise
    except Exception as e:  # av raises many error types (InvalidDataError, EOFError, ...)
        raise DataError(f"{path}: cannot decode video ({type(e).__name__}: {str(e).splitlines()[0][:80]})") from None
    if n == 0:
        raise DataError(f"{path}: video has no decodable frames")
    return n


def read_frames(path: str | os.PathLike, indices: Sequence[int] | None = None) -> torch.Tensor:
    """Frames of a video file or a frame folder as uint8 (T, H, W, 3); ``indices`` selects frames (in any order,
    repeats allowed), None reads every frame. Decoding stops after the last index needed."""
    path = Path(path)
    wanted = None if indices is None else sorted(set(int(i) for i in indices))
    if path.is_dir():
        from PIL import Image

        files = frame_files(path)
        if not files:
            raise DataError(f"{path}: frame folder has no images")
        chosen = range(len(files)) if wanted is None else wanted
        frames = {}
        for i in chosen:
            f = files[min(i, len(files) - 1)]
            try:
                with Image.open(f) as im:
                    frames[i] = np.asarray(im.convert("RGB"))
            except Exception as e:
                raise DataError(f"{f}: cannot read frame image ({type(e).__name__})") from None
    else:
        import av

        frames = {}
        last = None if wanted is None else wanted[-1]
        want = None if wanted is None else set(wanted)
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise DataError(f"{path}: no video stream")
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    if want is None or i in want:
                        frames[i] = frame.to_ndarray(format="rgb24")
                    if last is not None and i >= last:
                        break
        except DataError:
            raise
        except Exception as e:
            if not frames:
                raise DataError(f"{path}: cannot decode video ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:80]})") from None
            # a file truncated in the middle: keep what decoded
        if not frames:
            raise DataError(f"{path}: video has no decodable frames")
    order = list(range(len(frames))) if indices is None else [int(i) for i in indices]
    got = sorted(frames)
    # an index past the end of a video shorter than announced takes the last frame decoded before it
    out = [frames[i] if i in frames else frames[max([g for g in got if g <= i], default=got[0])]
           for i in (got if indices is None else order)]
    shapes = {f.shape for f in out}
    if len(shapes) > 1:
        raise DataError(f"{path}: frames have different sizes {sorted(shapes)}")
    return torch.from_numpy(np.stack(out))


def sample_indices(num_available: int, num_frames: int, stride: int, start: int | None = None,
                   generator: torch.Generator | None = None) -> list[int]:
    """``num_frames`` indices ``stride`` apart. ``start`` None: random start (training) from ``generator``;
    short videos are covered by clamping to the last frame."""
    span = (num_frames - 1) * stride + 1
    max_start = max(0, num_available - span)
    if start is None:
        start = int(torch.randint(0, max_start + 1, (1,), generator=generator))
    start = min(max(0, start), max_start)
    return [min(start + i * stride, num_available - 1) for i in range(num_frames)]


def resize_crop(frames: torch.Tensor, size: int, short_side: int | None = None, random_crop: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float (C, T, size, size) in [0, 1]: resize the short side to ``short_side`` (default
    ``size``), then crop ``size`` x ``size`` (random or centre)."""
    x = frames.permute(0, 3, 1, 2).float() / 255.0  # (T, C, H, W)
    h, w = x.shape[-2:]
    short = max(short_side or size, size)
    scale = short / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))  # aspect ratio kept
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
    if random_crop:
        top = int(torch.randint(0, nh - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, nw - size + 1, (1,), generator=generator))
    else:
        top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    return x.permute(1, 0, 2, 3).clamp(0, 1).contiguous()


def write_video(path: str | os.PathLike, frames: torch.Tensor | np.ndarray, fps: int = 8, codec: str | None = None):
    """Write uint8 (T, H, W, 3) frames with PyAV (mp4 / avi / mkv: mpeg4, webm: vp9, gif: gif). For tests and
    examples."""
    import av

    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    ext = path.suffix.lower()
    codec = codec or {".webm": "libvpx-vp9", ".gif": "gif"}.get(ext, "mpeg4")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
        for f in frames:
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
