"""FastDiT-3D in miniature: one ModelNet10 class (chair), 512 points, 16^3 voxels, 2^3-voxel patches (8^3 = 512
tokens), the same small DiT trained for the same wall time under four maskings, then generated vs real 1-NNA,
COV and MMD with the Chamfer distance (PointFlow's protocol: leave-one-out 1-NN over the union of the two sets).

    NPZ=ModelNet10/modelnet10_pcd1024.npz
    python benchmarks/3d_fastdit.py run none   --npz $NPZ --seconds 300 --root runs/fastdit   # DiT-3D, no masking
    python benchmarks/3d_fastdit.py run random75 ...   /  random99  /  voxel   (FastDiT-3D: 99 % bg / 95 % fg)
    python benchmarks/3d_fastdit.py real --npz $NPZ --root runs/fastdit    # the floor: real training vs real test
    python benchmarks/3d_fastdit.py denoise --npz $NPZ --root runs/fastdit # held-out eps MSE of every arm
    python benchmarks/3d_fastdit.py table --root runs/fastdit

``run`` trains in-process with the library's Trainer (the same code ``mae-3d pretrain --method fastdit-3d`` runs)
and stops after ``--seconds`` of training, then samples with DDIM and scores the samples against test chairs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

CHAIR = 2  # ModelNet10 class index (alphabetical)
MODEL = {"voxel_size": 16, "patch_size": 2, "embed_dim": 96, "depth": 4, "num_heads": 4, "decoder_depth": 2,
         "window_size": 4}
ARMS = {
    "none": ({"masking": "none"}, "DiT-3D: no masking"),
    "random75": ({"masking": "random", "random_mask_ratio": 0.75}, "random masking, 75 %"),
    "random99": ({"masking": "random", "random_mask_ratio": 0.99}, "random masking, 99 %"),
    "voxel": ({"masking": "voxel"}, "FastDiT-3D: voxel-aware, 99 % background / 95 % foreground"),
}


def chair_npz(npz: str, root: Path) -> Path:
    """The chair class alone, as an .npz the point-folder dataset reads (label 0, class_names ['chair'])."""
    out = root / "modelnet10_chair.npz"
    if not out.exists():
        root.mkdir(parents=True, exist_ok=True)
        z = np.load(npz, allow_pickle=False)
        arrays = {}
        for s in ("train", "test"):
            keep = z[f"{s}_labels"] == CHAIR
            arrays[f"{s}_points"] = z[f"{s}_points"][keep]
            arrays[f"{s}_labels"] = np.zeros(int(keep.sum()), dtype=np.int64)
        np.savez(out, class_names=np.array(["chair"]), **arrays)
    return out


def chamfer_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(|a|, |b|) Chamfer-L2 (mean squared nearest distance both ways, mae_3d.ops.chamfer_distance)."""
    from mae_3d.ops import chamfer_distance

    return torch.stack([chamfer_distance(x[None].expand(len(b), -1, -1), b, "l2") for x in a])


def nna_cov_mmd(gen: torch.Tensor, ref: torch.Tensor) -> dict:
    """1-NNA (%), COV (%), MMD (x 1e3) with Chamfer-L2, as PointFlow's ``compute_all_metrics``."""
    gg, rr, gr = chamfer_matrix(gen, gen), chamfer_matrix(ref, ref), chamfer_matrix(gen, ref)
    n, m = len(gen), len(ref)
    full = torch.cat([torch.cat([gg, gr], 1), torch.cat([gr.T, rr], 1)], 0)
    full.fill_diagonal_(float("inf"))
    label = torch.cat([torch.zeros(n), torch.ones(m)])
    nna = (label[full.argmin(1)] == label).float().mean()
    cov = len(set(gr.argmin(1).tolist())) / m
    mmd = gr.min(0).values.mean()
    return {"1-NNA-CD": round(100 * float(nna), 1), "COV-CD": round(100 * cov, 1),
            "MMD-CD_x1e3": round(1e3 * float(mmd), 3)}


def reference_set(npz: Path, num: int, seed: int = 0) -> torch.Tensor:
    import mae_core

    test = mae_core.create_dataset("point-folder", "test", domain="3d", path=str(npz), num_points=512)
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:num]
    return torch.stack([test[int(i)]["points"] for i in idx]).float()


class WallClock:
    """Stops the trainer after ``seconds`` of training, counted as this process's CPU time (one thread: the wall
    time of a dedicated core), so the arms get the same time whatever else the shared machine runs."""

    def __init__(self, seconds: float):
        self.seconds, self.t0 = seconds, None

    def on_fit_start(self, trainer):
        self.t0 = time.process_time()

    def on_step_end(self, trainer):
        if time.process_time() - self.t0 >= self.seconds:
            trainer.total_steps = trainer.step


def stage_run(a) -> None:
    import mae_core
    from mae_core.train import Trainer, TrainConfig, seed_everything

    torch.set_num_threads(1)
    root = Path(a.root)
    npz = chair_npz(a.npz, root)
    seed_everything(a.seed)
    ds = mae_core.create_dataset("point-folder", "train", domain="3d", path=str(npz), num_points=512)
    model = mae_core.create_model("fastdit-3d", domain="3d", dataset=ds, **MODEL, **ARMS[a.arm][0])
    tc = TrainConfig(epochs=100000, batch_size=a.batch_size, lr=a.lr, min_lr=a.lr, warmup_epochs=0,
                     weight_decay=0.0, betas=(0.9, 0.999), progress=False, log_every=50, seed=a.seed, device="cpu")
    clock = WallClock(a.seconds)
    trainer = Trainer(model, ds, tc, callbacks=[clock])
    t0, c0 = time.time(), time.process_time()
    trainer.fit()
    train_s, train_cpu_s = time.time() - t0, time.process_time() - c0
    out = root / f"{a.arm}-s{a.seed}"
    model.save_pretrained(out)
    model.eval()
    t1 = time.process_time()
    gen = torch.cat([model.sample(min(16, a.num - i), 512, generator=torch.Generator().manual_seed(a.seed + i),
                                  sampler="ddim", steps=a.steps) for i in range(0, a.num, 16)])
    sample_s = time.process_time() - t1
    ref = reference_set(npz, a.num)
    res = {"arm": a.arm, "description": ARMS[a.arm][1], "seed": a.seed, "steps": trainer.step,
           "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu_s, 1),
           "sample_cpu_s": round(sample_s, 1), "num": a.num, "ddim_steps": a.steps,
           "lr": a.lr, "batch_size": a.batch_size, "last_loss": getattr(trainer, "last_loss", None),
           "sample_spread": round(float(gen.std()), 4), "real_spread": round(float(ref.std()), 4),
           **nna_cov_mmd(gen, ref), "model": {**MODEL, **ARMS[a.arm][0]}}
    from mae_3d.generate import draw_samples
    draw_samples(model, None, out / "samples.png", num=6, samples=gen[:6])
    (out / "bench.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def stage_real(a) -> None:
    """The floor of the protocol: real training chairs vs the real test chairs."""
    import mae_core

    root = Path(a.root)
    npz = chair_npz(a.npz, root)
    train = mae_core.create_dataset("point-folder", "train", domain="3d", path=str(npz), num_points=512)
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:a.num]
    gen = torch.stack([train[int(i)]["points"] for i in idx]).float()
    noise = torch.randn(a.num, 512, 3) * float(gen.std())
    res = {"real-train": nna_cov_mmd(gen, reference_set(npz, a.num)),
           "gaussian-blob": nna_cov_mmd(noise, reference_set(npz, a.num))}
    (root / "real.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


@torch.no_grad()
def stage_denoise(a) -> None:
    """Held-out denoising error of each saved arm on the sampling path (every patch, no masking): eps MSE on test
    chairs at fixed timesteps, the same noise for every arm. A zero predictor scores 1."""
    from mae_core.api import from_pretrained

    torch.set_num_threads(1)
    root = Path(a.root)
    ref = reference_set(chair_npz(a.npz, root), a.num, seed=2)
    ts = [10, 100, 250, 500, 750, 999]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(len(ts), *ref.shape, generator=g)
    res, rows = {}, []
    for d in sorted(root.glob("*-s*/")):
        model = from_pretrained(d).eval()
        c = model.config
        x0 = ref * c.data_scale
        row = {}
        for i, t in enumerate(ts):
            tt = torch.full((len(ref),), t, dtype=torch.long)
            xt = model.diffusion.q_sample(x0, tt, noise[i])
            row[t] = round(float(((model.eps(xt, tt) - noise[i]) ** 2).mean()), 4)
        res[d.name] = row
        print(d.name, row, flush=True)
        if a.picture:
            rows.append((d.name.split("-s")[0], model.sample(5, 512, generator=torch.Generator().manual_seed(0))))
    (root / "denoise.json").write_text(json.dumps(res, indent=1))
    if a.picture:
        from mae_3d.viz import _scatter
        from mae_core.viz import pyplot, save_figure

        order = {"none": 0, "random75": 1, "random99": 2, "voxel": 3}
        rows = [("real test chairs", ref[:5])] + sorted(rows, key=lambda r: order.get(r[0], 9))
        plt = pyplot()
        fig = plt.figure(figsize=(10, 2.1 * len(rows)))
        for i, (name, clouds) in enumerate(rows):
            for j in range(5):
                ax = fig.add_subplot(len(rows), 5, i * 5 + j + 1, projection="3d")
                _scatter(ax, clouds[j][:, [0, 2, 1]], "tab:gray" if i == 0 else "tab:red",
                         title=(ARMS[name][1] if name in ARMS else name) if j == 0 else None)
        save_figure(fig, a.picture)


def stage_table(a) -> None:
    root = Path(a.root)
    print("| arm | steps in the budget | train CPU s | 1-NNA-CD % (50 best) | COV-CD % | MMD-CD x1e3 | "
          "sample std / real |")
    print("|---|---|---|---|---|---|---|")
    for f in sorted(root.glob("*/bench.json")):
        r = json.loads(f.read_text())
        print(f"| {r['description']} (seed {r['seed']}) | {r['steps']} | {r['train_cpu_s']} | {r['1-NNA-CD']} | "
              f"{r['COV-CD']} | {r['MMD-CD_x1e3']} | {r['sample_spread']} / {r['real_spread']} |")
    if (root / "real.json").exists():
        print(json.dumps(json.loads((root / "real.json").read_text())))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    r = sub.add_parser("run")
    r.add_argument("arm", choices=list(ARMS))
    r.add_argument("--seconds", type=float, default=300)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--num", type=int, default=32, help="generated clouds = real test clouds scored")
    r.add_argument("--steps", type=int, default=50, help="DDIM steps")
    r.add_argument("--seed", type=int, default=0)
    for q in (r, sub.add_parser("real"), sub.add_parser("table"), sub.add_parser("denoise")):
        q.add_argument("--root", default="runs/fastdit")
        if q.prog.split()[-1] != "table":
            q.add_argument("--npz", default="ModelNet10/modelnet10_pcd1024.npz")
        if q.prog.split()[-1] in ("real", "denoise"):
            q.add_argument("--num", type=int, default=32)
        if q.prog.split()[-1] == "denoise":
            q.add_argument("--picture", default=None, help="also sample 5 clouds per arm into this picture")
    a = p.parse_args()
    {"run": stage_run, "real": stage_real, "table": stage_table, "denoise": stage_denoise}[a.stage](a)


if __name__ == "__main__":
    main()
