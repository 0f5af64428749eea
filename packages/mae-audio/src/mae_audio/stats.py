"""``mae-audio stats``: the normalisation statistics (mean, std of the fbank values) of a data set's training split,
as Audio-MAE computes them for each data set. Runs use them as ``norm_mean`` / ``norm_std`` (features become
(x - mean) / (2 std)); a run without them computes the same numbers itself and stores them in its config."""
from __future__ import annotations

import json

import yaml

from mae_core import registry
from mae_core.checkpoint import atomic_write_text
from mae_core.config import from_dict
from mae_core.errors import ConfigError

from .features import dataset_stats


def add_stats_arguments(p) -> None:
    p.add_argument("--dataset", help="data set name (default: birdcalls, or audio-folder with --data)")
    p.add_argument("--data", metavar="PATH", help="folder or CSV with your audio")
    p.add_argument("--preset", help="take the front end (sample rate, target length) from this preset")
    p.add_argument("--sample-rate", type=int, help="sample rate of the features")
    p.add_argument("--target-length", type=int, help="fbank frames per clip")
    p.add_argument("--num-mel-bins", type=int, help="mel bins")
    p.add_argument("--out", metavar="YAML", help="also write `data: {norm_mean, norm_std}` to this config file")
    p.add_argument("--json", action="store_true", help="print JSON only")


def run_stats(args) -> int:
    preset = registry.get_preset(args.preset, "audio") if args.preset else None
    name = args.dataset or (preset.overrides.get("dataset") if preset else None)
    if not name:
        name = "audio-folder" if args.data else "birdcalls"
    spec = registry.get_dataset(name, "audio")
    if args.data and not spec.takes_path:
        raise ConfigError(f"data set {name!r} does not read a path")
    over = dict(preset.overrides.get("data", {})) if preset else {}
    for k in ("sample_rate", "target_length", "num_mel_bins"):
        if getattr(args, k) is not None:
            over[k] = getattr(args, k)
    if args.data:
        over["path"] = args.data
    over.update(norm_mean=0.0, norm_std=1.0)  # the raw features are what is measured
    cfg = from_dict(spec.config_cls, over, where="stats")
    ds = spec.build(cfg, "train")
    mean, std = dataset_stats(ds.raw)
    res = {"dataset": name, "clips": len(ds), "sample_rate": cfg.sample_rate, "target_length": cfg.target_length,
           "num_mel_bins": cfg.num_mel_bins, "norm_mean": round(mean, 4), "norm_std": round(std, 4)}
    if args.out:
        atomic_write_text(args.out, yaml.safe_dump({"data": {"norm_mean": res["norm_mean"],
                                                             "norm_std": res["norm_std"]}}, sort_keys=False))
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{name}: {len(ds)} training clips at {cfg.sample_rate} Hz, {cfg.target_length} frames x "
              f"{cfg.num_mel_bins} mel bins")
        print(f"norm_mean {res['norm_mean']}  norm_std {res['norm_std']}   (flags: --norm-mean {res['norm_mean']} "
              f"--norm-std {res['norm_std']})")
    return 0
