"""Process-group helpers and a sampler that makes a W-process run see exactly the batches of a 1-process run."""
from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def world_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (0, 1, 0 when not distributed)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: torch.device) -> tuple[int, int]:
    rank, world, _ = world_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world


def is_main() -> bool:
    return world_info()[0] == 0


def all_reduce_mean(values: list[float], device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


class GlobalBatchSampler(Sampler[int]):
    """Each epoch a seeded permutation of the dataset is cut into global batches of ``batch_size * world``; this
    rank takes the elements ``rank, rank + world, ...`` of each global batch. Deterministic per (seed, epoch), so
    a resumed run starts exactly where it stopped (``start_batch``) and a 1-process run with the global batch
    size sees the same samples in the same global batches as a W-process run. The last incomplete global batch is
    dropped (``drop_last``), or kept: as it is with one process, padded by wrapping around with several (every rank
    needs the same number of steps)."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True):
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        self.start_batch = 0
        gb = batch_size * world
        self.num_batches = n // gb if drop_last else math.ceil(n / gb)
        if self.num_batches == 0:
            from ..errors import MaeError
            raise MaeError(f"the training set has {n} samples, fewer than one global batch of {gb} "
                           f"(batch size {batch_size} x {world} processes): lower --batch-size")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        if not self.drop_last and self.world == 1:
            return max(self.n - self.start_batch * self.batch_size, 0)
        return (self.num_batches - self.start_batch) * self.batch_size

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        gb = self.batch_size * self.world
        if not self.drop_last and self.world == 1:  # the last batch is simply smaller
            return iter(perm[self.start_batch * gb:].tolist())
        total = self.num_batches * gb
        if total > self.n:
            perm = torch.cat([perm, perm[: total - self.n]])
        perm = perm[:total].view(self.num_batches, gb)[self.start_batch:, self.rank::self.world]
        return iter(perm.reshape(-1).tolist())


class ShardedGenerator:
    """A generator that draws the global batch's random numbers on every rank and keeps this rank's rows, so
    masks do not depend on how the batch is split between processes."""

    def __init__(self, generator: torch.Generator, rank: int, world: int):
        self.generator, self.rank, self.world = generator, rank, world
        self.device = generator.device

    def rand(self, shape) -> torch.Tensor:
        b, *rest = shape
        x = torch.rand((b * self.world, *rest), generator=self.generator, device=self.device)
        return x[self.rank::self.world]

    def get_state(self):
        return self.generator.get_state()

    def set_state(self, s):
        self.generator.set_state(s)


def relaunch(domain: str, argv: list[str], nproc: int) -> int:
    """Re-run a ``mae-<domain>`` command line under torch's elastic launcher with ``nproc`` processes on this
    machine (``--nproc`` removed); each process runs ``python -m mae_core.launch DOMAIN ...``."""
    from torch.distributed.run import main as torchrun

    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        rest.append(a)
    torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", "mae_core.launch", domain, *rest])
    return 0
