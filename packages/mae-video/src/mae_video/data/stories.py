"""Long "story" videos as sequences of segment embeddings (the data of LV-MAE), embedded: no download.

A story is 20-60 segments (``min_segments`` / ``max_segments``), each a moving-shapes clip (8 x 32 x 32) of one
scene: one shape, colour and background for the whole story, as the shots of one long video, while each segment
has its own start and speed. A story plays four acts, each a run of segments of one motion, with random act
lengths (at least two segments each). The eight story labels are four motion sets played in two orders, forward
and backward (``SCRIPTS``): stories of labels 2s and 2s + 1 contain the same motions in the same proportions on
average, so the mean of a story's segment embeddings cannot tell them apart, only the order can.

Each segment becomes one embedding of a frozen short-clip encoder (``--teacher``: a run or ``save_pretrained``
directory of the library's ``videomae``, loaded as a :class:`mae_core.teacher.FrozenTeacher`; empty: the default
VideoMAE recipe trained once on the moving-shapes clips by :func:`mae_core.teacher.cached_pretrain`; ``random``:
a random-weight VideoMAE, the control). The embeddings are computed once and cached on disk under ``cache_dir``
(default ``<teacher cache>/segment-embeddings``), keyed by the teacher's sha256 and the story settings. Samples:
``{"segments": (n, D) float, "length": n, "label": int, "index": i}``; ``collate_fn`` pads a batch to its longest
story with zeros.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mae_core.config import field, to_dict
from mae_core.errors import ConfigError
from mae_core.registry import get_method
from mae_core.teacher import FrozenTeacher, cached_pretrain, preserve_rng, teacher_cache

from .synthetic import CLASSES, MovingShapesConfig, generate_clips

# four motion sets (indices into CLASSES), each played forward (label 2s) and backward (label 2s + 1)
SETS = ((0, 2, 4, 7), (1, 3, 5, 6), (0, 3, 6, 4), (1, 2, 7, 5))
SCRIPTS = [order for s in SETS for order in (s, s[::-1])]
STORY_CLASSES = ["-".join(CLASSES[m] for m in script) for script in SCRIPTS]
TEACHER_EPOCHS = 24  # the videomae default recipe (mae_video._SPECS)


@dataclass
class LongVideoConfig:
    teacher: str = field("", "short-clip encoder whose embeddings make the segments: a videomae run or "
                             "save_pretrained directory; empty: the default VideoMAE on the clips (trained once, "
                             "cached under runs/teachers); 'random': random weights (control)")
    teacher_sha256: str = field("", "sha256 of the segment encoder's weights (checked when set)")
    teacher_epochs: int = field(TEACHER_EPOCHS, "epochs of the default segment encoder when it has to be trained",
                                ge=1)
    segment_pool: str = field("grid", "segment embedding: the encoder's pooled features (grid: token means per "
                                      "quadrant and time slot, the videomae probe default; time; mean)",
                              choices=["grid", "time", "mean"])
    num_frames: int = field(8, "frames per segment clip", ge=1)
    image_size: int = field(32, "frame side of a segment clip", ge=1)
    num_train: int = field(512, "training stories", ge=1)
    num_test: int = field(256, "test stories", ge=1)
    min_segments: int = field(20, "fewest segments in a story (four acts of at least two)", ge=8)
    max_segments: int = field(60, "most segments in a story", ge=8)
    seed: int = field(0, "story and clip seed")
    cache_dir: str = field("", "where segment embeddings are cached (empty: <teacher cache>/segment-embeddings)")


def clip_config(c: LongVideoConfig) -> MovingShapesConfig:
    """The moving-shapes clips the default segment encoder is trained on (its default 1024 training clips)."""
    return MovingShapesConfig(num_frames=c.num_frames, image_size=c.image_size)


_TEACHERS: dict = {}


def segment_encoder(c: LongVideoConfig) -> FrozenTeacher:
    """The frozen short-clip encoder named by ``c.teacher`` (trained first when empty), loaded once per process."""
    from ..methods.videomae import VideoMAE, VideoMAEConfig

    if c.teacher == "random":
        key = ("random", c.num_frames, c.image_size)
        if key not in _TEACHERS:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                _TEACHERS[key] = FrozenTeacher(VideoMAE(VideoMAEConfig(num_frames=c.num_frames,
                                                                       img_size=c.image_size)), source="random")
        return _TEACHERS[key]
    # the paper's VideoMAE model (the config class's defaults), not the no-argument run's embedded-data overrides
    ref = VideoMAEConfig()
    spec = get_method("videomae", "video")
    paper = {k: getattr(ref, k) for k in spec.default_dataset_model}
    # and the method's train defaults for what the no-argument run changes besides its epochs (its learning rate)
    train = {k: spec.train_defaults[k] for k in spec.default_dataset_train if k != "epochs"}
    recipe = {**train, "epochs": c.teacher_epochs, **paper}
    path = c.teacher or str(cached_pretrain("videomae", clip_config(c), recipe, prefix="lvmae-seg",
                                            what="segment encoder (VideoMAE)"))
    key = (str(Path(path).resolve()), c.teacher_sha256)
    if key not in _TEACHERS:
        _TEACHERS[key] = FrozenTeacher.from_path(path, c.teacher_sha256 or None)
    return _TEACHERS[key]


def make_stories(n: int, min_seg: int, max_seg: int, seed: int) -> tuple[torch.Tensor, list[np.ndarray]]:
    """(story labels (n,), the motion of every segment of each story): four acts of the script's motions."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(SCRIPTS), n)
    motions = []
    for lab in labels:
        total = int(rng.integers(min_seg, max_seg + 1))
        cuts = np.sort(rng.integers(0, total - 8 + 1, 3))  # each act at least two segments
        acts = 2 + np.diff(np.concatenate([[0], cuts, [total - 8]]))
        motions.append(np.repeat(np.asarray(SCRIPTS[lab]), acts))
    return torch.from_numpy(labels), motions


@torch.no_grad()
def embed_stories(teacher: FrozenTeacher, c: LongVideoConfig, motions: list[np.ndarray], seed: int,
                  chunk: int = 32) -> torch.Tensor:
    """(sum of lengths, D): every segment clip of every story (one scene per story) through the frozen encoder."""
    out = []
    for s in range(0, len(motions), chunk):
        part = motions[s:s + chunk]
        labels = torch.from_numpy(np.concatenate(part))
        scenes = torch.repeat_interleave(torch.arange(len(part)), torch.tensor([len(m) for m in part]))
        clips, _, _ = generate_clips(len(labels), c.num_frames, c.image_size, seed=seed * 100003 + s,
                                     labels=labels, scenes=scenes)
        for i in range(0, len(clips), 256):
            video = (clips[i:i + 256].float() / 255.0 - 0.5) / 0.5  # as MovingShapes
            out.append(teacher.model.encode({"video": video}, pool=c.segment_pool).float())
    return torch.cat(out)


def story_embeddings(c: LongVideoConfig, split: str, motions: list[np.ndarray], seed: int) -> torch.Tensor:
    """The split's segment embeddings, from the disk cache when there."""
    teacher = segment_encoder(c)
    if teacher.sha256 is None:  # random weights: cheap at test sizes, nothing to key a cache by
        with preserve_rng():
            return embed_stories(teacher, c, motions, seed)
    settings = {k: v for k, v in to_dict(c).items() if k not in ("teacher", "teacher_sha256", "cache_dir")}
    key = json.dumps([teacher.sha256, settings, split], sort_keys=True)
    cache = Path(c.cache_dir or teacher_cache() / "segment-embeddings")
    path = cache / f"{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    emb = embed_stories(teacher, c, motions, seed)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(emb, tmp)
    os.replace(tmp, path)
    print(f"segment embeddings: {len(emb)} {split} segments embedded, cached in {path}", flush=True)
    return emb


class LongVideoStories(Dataset):
    """Stories of segment embeddings (module docstring)."""

    classes = STORY_CLASSES

    def __init__(self, config: LongVideoConfig | None = None, split: str = "train"):
        self.config = c = config or LongVideoConfig()
        if c.max_segments < c.min_segments:  # checked here, not in the config: either bound alone is valid
            raise ConfigError(f"data.max_segments ({c.max_segments}) is below data.min_segments "
                              f"({c.min_segments})")
        n = c.num_train if split == "train" else c.num_test
        seed = c.seed * 2 + (0 if split == "train" else 1) + 7919
        self.labels, self.motions = make_stories(n, c.min_segments, c.max_segments, seed)
        self.embeddings = story_embeddings(c, split, self.motions, seed)
        self.offsets = np.concatenate([[0], np.cumsum([len(m) for m in self.motions])])
        self.num_classes = len(SCRIPTS)
        self.dim = self.embeddings.shape[1]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return {"segments": self.embeddings[a:b], "length": b - a, "label": int(self.labels[i]), "index": i}

    @staticmethod
    def collate_fn(samples: list[dict]) -> dict:
        length = torch.tensor([s["length"] for s in samples])
        seg = samples[0]["segments"].new_zeros(len(samples), int(length.max()), samples[0]["segments"].shape[1])
        for j, s in enumerate(samples):
            seg[j, :s["length"]] = s["segments"]
        return {"segments": seg, "length": length, "label": torch.tensor([s["label"] for s in samples]),
                "index": torch.tensor([s["index"] for s in samples])}
