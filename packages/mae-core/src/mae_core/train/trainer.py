"""The training engine, once for every domain.

It gets a model whose ``forward(batch, generator=...)`` returns a :class:`~mae_core.models.ModelOutput` with a
``loss``, a dataset of dict samples and a :class:`TrainConfig`. It owns: AdamW with no decay on biases / norms /
tokens, the lr scaling rule and per-iteration warm-up + cosine schedule (times each group's ``lr_scale``),
gradient accumulation and clipping, autocast (bf16; fp16 with a GradScaler on GPU), the non-finite loss guard,
DDP under torchrun, progress bar, JSONL + TensorBoard metrics, periodic atomic checkpoints and exact resume.

Hooks: ``trainer.progress`` (``step / total_steps``) is handed to every module of the model that defines
``set_progress(p)`` before each forward (mask-ratio schedules, EMA teachers; ``mask_schedule`` adds a
:class:`~mae_core.masking.MaskRatioSchedule` of the model's ratio), and ``callbacks`` run after every
optimizer step (:mod:`mae_core.train.callbacks`; EMA updates). Both are restored exactly on resume: the progress is
derived from the restored step, and callbacks' ``state_dict`` tensors are saved in every checkpoint.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..checkpoint import list_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint
from ..config import field, to_dict
from ..data.utils import collate_dicts
from ..errors import MaeError, NonFiniteLossError
from ..masking import MaskRatioSchedule
from .distributed import GlobalBatchSampler, ShardedGenerator, all_reduce_mean, init_distributed
from .optim import build_optimizer, cosine_lr, param_groups, scaled_lr, set_lr
from .runtime import move_to, resolve_device, rng_state, seed_everything, set_rng_state  # noqa: F401 (re-exported)


@dataclass
class TrainConfig:
    epochs: int = field(20, "passes over the training set", ge=1)
    batch_size: int = field(128, "samples per step and process", ge=1)
    base_lr: float = field(1.5e-4, "lr = base_lr x effective batch / 256 (effective = batch x accum x processes)",
                           gt=0)
    lr: float | None = field(None, "absolute learning rate; overrides base_lr when set", gt=0)
    min_lr: float = field(0.0, "learning rate at the end of the cosine schedule", ge=0)
    warmup_epochs: float = field(2.0, "epochs of linear warm-up", ge=0)
    weight_decay: float = field(0.05, "AdamW weight decay (none on biases, norms and tokens)", ge=0)
    betas: tuple[float, float] = field((0.9, 0.95), "AdamW betas")
    optimizer: str = field("adamw", "adamw, adam or sgd", choices=["adamw", "adam", "sgd"])
    drop_last: bool = field(True, "drop the last incomplete batch of each epoch (off: a smaller last batch with one "
                                  "process; wrap-around padding with several)")
    accum_steps: int = field(1, "gradient accumulation steps per optimizer step", ge=1)
    clip_grad: float | None = field(None, "clip the gradient norm to this value (none = no clipping)", gt=0)
    amp: str = field("none", "mixed precision: none, bf16, or fp16 (GPU only, with a GradScaler)",
                     choices=["none", "bf16", "fp16"])
    device: str = field("auto", "auto, cpu, cuda or cuda:N")
    seed: int = field(0, "seed of python, numpy, torch, the masking generator and the data order")
    num_workers: int = field(0, "data-loader worker processes", ge=0)
    log_every: int = field(10, "optimizer steps between metric lines", ge=1)
    finite_check_every: int = field(1, "optimizer steps between checks of the non-finite loss guard; each check "
                                       "waits for the device, so on a GPU a larger value (e.g. 50) keeps the steps "
                                       "free of host synchronisation (a check also runs before every metric line "
                                       "and checkpoint, so no non-finite weights are saved)", ge=1)
    checkpoint_every: int = field(0, "optimizer steps between checkpoints (0 = at the end of every epoch)",
                                  ge=0)
    keep_last: int = field(2, "training checkpoints kept on disk", ge=1)
    max_steps: int | None = field(None, "stop after this many optimizer steps (for quick runs)", ge=0)
    grad_checkpointing: bool = field(False, "recompute encoder activations in the backward pass (saves memory)")
    compile: bool = field(False, "torch.compile the model (fuses element-wise ops; the first steps are slow)")
    progress: bool = field(True, "show a progress bar")
    mask_schedule: str = field("constant", "mask-ratio schedule over training, for any method that masks with a "
                                           "ratio: constant (the model's mask_ratio), linear, or cosine (LMD: from "
                                           "mask_schedule_start to the end ratio over the first mask_schedule_fraction "
                                           "of training, then fixed)", choices=["constant", "linear", "cosine"])
    mask_schedule_start: float = field(0.15, "mask ratio at the start of a linear / cosine schedule", ge=0, lt=1)
    mask_schedule_end: float | None = field(None, "mask ratio the schedule reaches (none = the model's mask_ratio)",
                                            ge=0, lt=1)
    mask_schedule_fraction: float = field(2 / 3, "fraction of training over which the schedule rises", gt=0, le=1)

    def validate(self, where: str = "train") -> None:
        """A known device and AdamW betas in [0, 1) (called by ``mae_core.config.from_dict``)."""
        import re

        from ..config import check_range
        from ..errors import ConfigError

        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"{where}.device: {self.device!r} is not a device; use auto, cpu, cuda or cuda:N")
        if len(self.betas) != 2:
            raise ConfigError(f"{where}.betas: expected two numbers, got {list(self.betas)}")
        for i, b in enumerate(self.betas):
            check_range(b, {"ge": 0, "lt": 1}, f"{where}.betas[{i}]")


class Trainer:
    """``Trainer(model, dataset, config, run_dir).fit()``.

    ``groups_fn(model) -> param groups`` overrides the default groups (fine-tuning uses layer decay).
    ``on_epoch_end(trainer, epoch)`` may return metrics to log (e.g. validation accuracy).
    ``callbacks``: objects with ``on_step_end(trainer)`` (after every optimizer step) and optionally
    ``on_fit_start(trainer)``, ``state_dict()`` / ``load_state_dict(state)`` (see :mod:`mae_core.train.callbacks`).
    """

    def __init__(self, model: torch.nn.Module, dataset: Dataset, config: TrainConfig, run_dir=None,
                 groups_fn: Callable | None = None, collate_fn: Callable = collate_dicts,
                 on_epoch_end: Callable | None = None, run_config: dict | None = None,
                 callbacks: Sequence | None = None):
        self.config = c = config
        self.device = resolve_device(c.device)
        self.rank, self.world = init_distributed(self.device)
        self.is_main = self.rank == 0
        self.run_dir = run_dir
        self.run_config = run_config or {}
        self.on_epoch_end = on_epoch_end
        self.callbacks = list(callbacks or [])
        seed_everything(c.seed)
        self.raw_model = model.to(self.device)
        # modules that read the training progress, found once (set_progress is called before every forward)
        self.progress_modules = [m for m in model.modules() if callable(getattr(m, "set_progress", None))]
        self.mask_schedule = None  # --mask-schedule: the model's mask ratio follows the progress too
        if c.mask_schedule != "constant":
            self.mask_schedule = MaskRatioSchedule(model, c.mask_schedule, c.mask_schedule_start, c.mask_schedule_end,
                                                   c.mask_schedule_fraction)
            self.progress_modules.append(self.mask_schedule)
        if c.grad_checkpointing and hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(True)
        groups = groups_fn(model) if groups_fn else param_groups(model, c.weight_decay)
        self.effective_batch = c.batch_size * c.accum_steps * self.world
        self.lr = c.lr if c.lr is not None else scaled_lr(c.base_lr, self.effective_batch)
        self.optimizer = build_optimizer(groups, self.lr, c.betas, c.optimizer)
        use_scaler = c.amp == "fp16" and self.device.type == "cuda"
        if c.amp == "fp16" and self.device.type != "cuda":
            raise MaeError("amp fp16 needs a GPU; use --amp bf16 on CPU")
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[c.amp]
        self.model = torch.compile(model) if c.compile else model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            # a model whose pretraining loss leaves some parameters unused (a fine-tuning head, a part only
            # ``encode`` uses) says so with ``ddp_find_unused_parameters = True``
            self.model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                             find_unused_parameters=bool(getattr(model, "ddp_find_unused_parameters", False)))
        self.dataset = dataset
        self.sampler = GlobalBatchSampler(len(dataset), c.batch_size, self.rank, self.world, shuffle=True,
                                          seed=c.seed, drop_last=c.drop_last)
        self.collate_fn = collate_fn
        self.mask_gen = torch.Generator(device="cpu").manual_seed(c.seed + 12345)
        self.generator = ShardedGenerator(self.mask_gen, self.rank, self.world) if self.world > 1 else self.mask_gen
        self.steps_per_epoch = self.sampler.num_batches // c.accum_steps
        if self.steps_per_epoch == 0:
            raise MaeError(f"{self.sampler.num_batches} batches per epoch is fewer than accum_steps={c.accum_steps}")
        self.total_steps = c.epochs * self.steps_per_epoch
        if c.max_steps is not None:
            self.total_steps = min(self.total_steps, c.max_steps)
        self.warmup_steps = c.warmup_epochs * self.steps_per_epoch
        self.step = 0  # optimizer steps done
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches consumed in the current epoch
        self.writer = None
        self.last_loss = float("nan")
        self.history: list[dict] = []

    @property
    def progress(self) -> float:
        """Training progress ``step / total_steps`` in [0, 1]; derived from ``step``, so a resume restores it."""
        return self.step / self.total_steps if self.total_steps else 1.0

    def _callbacks(self, hook: str):
        return [(i, getattr(cb, hook)) for i, cb in enumerate(self.callbacks) if callable(getattr(cb, hook, None))]

    # ---- checkpoints -------------------------------------------------------------------------------------------------
    def state_dict_json(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "effective_batch": self.effective_batch, "lr": self.lr, "world": self.world,
                "train_config": to_dict(self.config), "run_config": self.run_config}

    def save(self) -> Path | None:
        if not (self.is_main and self.run_dir is not None):
            return None
        js, tensors = rng_state(self.mask_gen)
        for i, state_fn in self._callbacks("state_dict"):
            tensors.update({f"callback.{i}.{k}": v.detach().contiguous().cpu() for k, v in state_fn().items()})
        state = self.state_dict_json()
        state["rng"] = js
        path = save_checkpoint(self.run_dir.checkpoints / f"step-{self.step:08d}", self.raw_model, self.optimizer,
                               self.scaler, state, tensors)
        prune_checkpoints(self.run_dir.checkpoints, self.config.keep_last)
        return path

    def resume(self, ckpt: str | Path) -> None:
        state, tensors = load_checkpoint(ckpt, self.raw_model, self.optimizer, self.scaler)
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        if state.get("world", 1) != self.world and self.is_main:
            print(f"note: resuming a {state.get('world')}-process run with {self.world} processes; "
                  "the data order stays the same, RNG streams of the new processes restart")
        set_rng_state(state["rng"], tensors, self.mask_gen)
        for i, load_fn in self._callbacks("load_state_dict"):
            prefix = f"callback.{i}."
            saved = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if not saved and self.callbacks[i].state_dict():
                raise MaeError(f"{ckpt}: no saved state for callback {i} ({type(self.callbacks[i]).__name__}); "
                               "was the run started without it?")
            load_fn(saved)

    def latest_checkpoint(self) -> Path | None:
        if self.run_dir is None:
            return None
        ckpts = list_checkpoints(self.run_dir.checkpoints)
        return ckpts[-1] if ckpts else None

    # ---- loop --------------------------------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.config.batch_size, sampler=self.sampler,
                          num_workers=self.config.num_workers, collate_fn=self.collate_fn,
                          drop_last=self.config.drop_last,
                          pin_memory=self.device.type == "cuda", persistent_workers=False,
                          generator=torch.Generator().manual_seed(self.config.seed + self.epoch))

    def _log(self, record: dict) -> None:
        self.history.append(record)
        if not self.is_main or self.run_dir is None:
            return
        self.run_dir.log(record)
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.run_dir.path / "tb"))
            except Exception:  # tensorboard missing or broken: JSONL still has everything
                self.writer = False
        if self.writer:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.writer.add_scalar(f"train/{k}", v, record["step"])

    def fit(self, resume_from: str | Path | None = None) -> dict:
        c = self.config
        for _, hook in self._callbacks("on_fit_start"):
            hook(self)
        if resume_from is not None:
            self.resume(resume_from)
        if self.run_dir is not None and self.is_main:
            nbytes = sum(p.numel() * p.element_size() for p in self.raw_model.parameters()) * 4
            self.run_dir.check_space(nbytes * (c.keep_last + 1))
        self.model.train()
        pbar = None
        if self.is_main and c.progress:
            from tqdm.auto import tqdm
            pbar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                        leave=True)
        t0 = time.time()
        # the window's loss sum and the non-finite guard stay on the device: read at log / check steps only
        seen, window_loss, window_n, window_t = 0, torch.zeros((), device=self.device), 0, time.time()
        bad = torch.zeros((), device=self.device)  # non-finite losses since the last check
        first_bad = torch.zeros((), device=self.device)  # the first of them
        last_good = self.latest_checkpoint()
        checked_step = self.step

        def check_finite():
            nonlocal checked_step
            if self.world > 1:
                torch.distributed.all_reduce(bad)
            if bad.item() > 0:
                when = (f"at step {self.step}" if checked_step >= self.step else
                        f"between steps {checked_step} and {self.step}")
                where = f"; the last good checkpoint is {last_good}" if last_good else ""
                raise NonFiniteLossError(
                    f"loss became {first_bad.item()} {when} (epoch {self.epoch}){where}: lower the "
                    "learning rate, enable --clip-grad, or check the data for NaN / inf values")
            checked_step = self.step
        done = self.step >= self.total_steps
        while not done and self.epoch < c.epochs:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            for batch in self._loader():
                if self.batch_in_epoch % c.accum_steps == 0:
                    set_lr(self.optimizer, cosine_lr(self.step, self.total_steps if c.max_steps else
                                                     c.epochs * self.steps_per_epoch, self.warmup_steps,
                                                     self.lr, c.min_lr))
                batch = move_to(batch, self.device)
                sync = (self.batch_in_epoch + 1) % c.accum_steps == 0
                ctx = self.model.no_sync() if (self.world > 1 and not sync) else contextlib.nullcontext()
                for m in self.progress_modules:
                    m.set_progress(self.progress)
                with ctx:
                    with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                        out = self.model(batch, generator=self.generator)
                    loss = out.loss
                    nonfinite = ~torch.isfinite(loss.detach())
                    first_bad.copy_(torch.where((bad == 0) & nonfinite, loss.detach().float(), first_bad))
                    bad.add_(nonfinite)
                    if c.finite_check_every == 1:  # before the backward pass: nothing non-finite is applied
                        check_finite()
                    self.scaler.scale(loss / c.accum_steps).backward()
                self.batch_in_epoch += 1
                window_loss += loss.detach().float()
                window_n += 1
                seen += len(next(iter(batch.values()))) if isinstance(batch, dict) else 0
                if not sync:
                    continue
                if c.clip_grad is not None:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), c.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                for _, hook in self._callbacks("on_step_end"):
                    hook(self)
                log_now = self.step % c.log_every == 0 or self.step == self.total_steps
                if c.finite_check_every > 1 and (log_now or self.step % c.finite_check_every == 0 or self.step >=
                                                 self.total_steps or (c.checkpoint_every and
                                                                      self.step % c.checkpoint_every == 0)):
                    check_finite()
                if pbar is not None:
                    pbar.update(1)
                if log_now:
                    loss_avg, = all_reduce_mean([window_loss.item() / max(window_n, 1)], self.device)
                    if pbar is not None:
                        pbar.set_postfix(loss=f"{loss_avg:.4f}", epoch=self.epoch)
                    dt = time.time() - window_t
                    rec = {"step": self.step, "epoch": self.epoch, "loss": loss_avg,
                           "lr": self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0].get("lr_scale", 1.0),
                           "samples_per_s": seen * self.world / max(dt, 1e-9), "time": time.time() - t0}
                    if self.mask_schedule is not None:
                        rec["mask_ratio"] = self.mask_schedule.ratio
                    rec.update({k: float(v) for k, v in out.metrics.items()})
                    self._log(rec)
                    self.last_loss = loss_avg
                    window_loss, window_n, seen, window_t = torch.zeros((), device=self.device), 0, 0, time.time()
                if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    last_good = self.save() or last_good
                if self.step >= self.total_steps:
                    done = True
                    break
            if not done:
                self.epoch += 1
                self.batch_in_epoch = 0
                if self.on_epoch_end is not None:
                    extra = self.on_epoch_end(self, self.epoch - 1)
                    if extra:
                        self._log({"step": self.step, "epoch": self.epoch - 1, **extra})
                    self.model.train()
                if not c.checkpoint_every:
                    if c.finite_check_every > 1:
                        check_finite()
                    last_good = self.save() or last_good
        if pbar is not None:
            pbar.close()
        check_finite()
        if window_n:
            self.last_loss, = all_reduce_mean([window_loss.item() / window_n], self.device)
        if self.writer:
            self.writer.close()
        latest = self.latest_checkpoint()
        if latest is None or int(latest.name.split("-")[1]) != self.step:
            self.save()
        return {"steps": self.step, "epochs": self.step // self.steps_per_epoch, "final_loss": self.last_loss,
                "train_time_s": time.time() - t0, "effective_batch": self.effective_batch, "lr": self.lr}
