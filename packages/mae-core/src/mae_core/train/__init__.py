from .callbacks import EMACallback, ema_momentum, step_progress
from .distributed import GlobalBatchSampler, ShardedGenerator, world_info
from .optim import build_optimizer, cosine_lr, param_groups, scaled_lr, set_lr
from .trainer import Trainer, TrainConfig, move_to, resolve_device, seed_everything

__all__ = ["GlobalBatchSampler", "ShardedGenerator", "world_info", "build_optimizer", "cosine_lr", "param_groups",
           "scaled_lr", "set_lr", "Trainer", "TrainConfig", "move_to", "resolve_device", "seed_everything",
           "EMACallback", "ema_momentum", "step_progress"]
