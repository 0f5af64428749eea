"""``mae-3d generate --run RUN --out DIR``: sample clouds from a trained generator (``fastdit-3d``), write each as a PLY
(Open3D, :func:`mae_3d.io.write_cloud`) and a picture of the samples next to real clouds of the run's data. The same
picture is the method's pretraining picture (``pictures/samples.png``)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from mae_core.errors import ConfigError
from mae_core.registry import CommandSpec, register_command
from mae_core.viz import pyplot, save_figure


@torch.no_grad()
def draw_samples(model, dataset, path, num: int = 4, seed: int = 0, samples: torch.Tensor | None = None):
    """Top row: real clouds of ``dataset``; bottom row: clouds sampled by ``model`` (or the given ``samples``)."""
    from .viz import _scatter

    model.eval()
    num = min(num, len(dataset)) if dataset is not None else num
    real = None
    if dataset is not None and len(dataset):
        idx = torch.linspace(0, len(dataset) - 1, num).long().tolist()
        real = torch.stack([dataset[i]["points"] for i in idx]).float()
    n_pts = real.shape[1] if real is not None else 512
    if samples is None:
        samples = model.sample(num, n_pts, generator=torch.Generator().manual_seed(seed))
    rows = 2 if real is not None else 1
    plt = pyplot()
    fig = plt.figure(figsize=(2.4 * num, 2.4 * rows))
    c = model.config
    for j in range(num):
        if real is not None:
            _scatter(fig.add_subplot(rows, num, j + 1, projection="3d"), real[j], "tab:gray",
                     title="real" if j == 0 else None)
        _scatter(fig.add_subplot(rows, num, (rows - 1) * num + j + 1, projection="3d"), samples[j], "tab:red",
                 title=f"sampled ({c.sampler}{'' if c.sampler == 'ddpm' else f', {c.sample_steps} steps'})"
                 if j == 0 else None)
    fig.suptitle(f"{getattr(model, 'method_name', 'fastdit-3d')}: masking {c.masking}", fontsize=9)
    return save_figure(fig, path)


def generate_arguments(p) -> None:
    p.add_argument("--run", required=True, help="a pretraining run of a generator (fastdit-3d)")
    p.add_argument("--out", required=True, help="output folder: sample_NNN.ply and samples.png")
    p.add_argument("--num", type=int, default=8, help="clouds to sample")
    p.add_argument("--num-points", type=int, default=None, help="points per cloud (default: the run's data)")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default=None, help="default: the run's model config")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the run's model config)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")


def run_generate(args) -> int:
    from mae_core.api import load_run

    from .io import write_cloud

    if args.num < 1:
        raise ConfigError(f"--num must be at least 1, got {args.num}")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    run = load_run(args.run)
    model = run.model.eval()
    if not callable(getattr(model, "sample", None)):
        raise ConfigError(f"--run {args.run}: method {run.method!r} is not a generator (use a fastdit-3d run)")
    if args.sampler:
        model.config.sampler = args.sampler
    if args.steps:
        model.config.sample_steps = args.steps
    data = None
    try:
        data = run.dataset("test") if run.config is not None else None
    except Exception:  # the run's data may be gone: the picture then shows the samples alone
        data = None
    n_pts = args.num_points or (int(data[0]["points"].shape[0]) if data is not None and len(data) else 512)
    samples = model.sample(args.num, n_pts, generator=torch.Generator().manual_seed(args.seed))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(samples):
        write_cloud(out / f"sample_{i:03d}.ply", s.cpu().numpy())
    draw_samples(model, data, out / "samples.png", num=min(args.num, 8), samples=samples[:8])
    print(json.dumps({"samples": args.num, "points": n_pts, "sampler": model.config.sampler,
                      "steps": model.config.sample_steps, "out": str(out)}))
    return 0


register_command(CommandSpec(name="generate", domain="3d",
                             help="sample clouds from a fastdit-3d run: PLY files and a picture",
                             add_arguments=generate_arguments, run=run_generate))
