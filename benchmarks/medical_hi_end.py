"""Hi-End-MAE in miniature: pretrain a small 3-D ViT MAE on the embedded synthetic brains with three decoders, load
each encoder into UNETR (``mae_medical.unetr.to_unetr``, patch 8) and fine-tune whole-tumour segmentation on a few
labelled cases; Dice on held-out cases.

Arms (same encoder, masking, loss and optimiser; ``HiEndMAEConfig.decoder_kind``):
- ``hi-end``: the Hi-End decoder (2 self-attention blocks, then cross blocks reading the taps at blocks 3, 6, 9,
  deepest first);
- ``last``: the same decoder, every cross block reading the final encoder output;
- ``plain``: an MAE decoder of 2 + 4 self-attention blocks (about the same parameter count);
- ``scratch``: the same UNETR from the untrained encoder.

Data: 4-modality 48^3 volumes (``generate_case``); pretraining on the unlabelled cases of stream 0, fine-tuning on
the first ``--labelled`` cases of stream 1 and testing on the next ``--test-cases`` (label: oedema, enhancing rim and
necrotic core together, i.e. the whole tumour). Every arm sees the same volumes; the seed sets the initialisation, the
masks, the data order and the flips.

    OMP_NUM_THREADS=1 uv run python benchmarks/medical_hi_end.py --seeds 0 --out runs/bench-hi-end
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn as nn

ARMS = ("hi-end", "last", "plain", "scratch")


def make_cases(indices, stream: int, size: int, with_label: bool):
    from mae_medical.data.synthetic_brain import EDEMA, generate_case

    mods = ["t1", "t1ce", "t2", "flair"]
    out = []
    for i in indices:
        vols, _, tissue = generate_case(i, size, stream, 0.03, mods)
        item = {"image": torch.stack([torch.as_tensor(vols[m]).float().clone() for m in mods])}
        if with_label:
            item["seg"] = (tissue >= EDEMA).long()[None]
        out.append(item)
    return out


class SegTask(nn.Module):
    """UNETR behind the trainer's contract: DiceCE loss on random-flipped labelled volumes."""

    def __init__(self, net: nn.Module):
        super().__init__()
        from monai.losses import DiceCELoss

        self.net = net
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, batch, generator=None):
        from mae_core.models import ModelOutput

        x, y = batch["image"], batch["seg"]
        if self.training:
            for axis in (2, 3, 4):
                if float(torch.rand((), generator=generator)) < 0.5:
                    x, y = x.flip(axis), y.flip(axis)
        loss = self.loss(self.net(x), y)
        return ModelOutput(loss=loss)


@torch.no_grad()
def dice(net, cases) -> float:
    net.eval()
    scores = []
    for c in cases:
        pred = net(c["image"][None]).argmax(1)[0]
        y = c["seg"][0]
        inter = float(((pred == 1) & (y == 1)).sum())
        scores.append(2 * inter / max(float((pred == 1).sum() + (y == 1).sum()), 1.0))
    return sum(scores) / len(scores)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--embed-dim", type=int, default=96)
    ap.add_argument("--num-heads", type=int, default=4)
    ap.add_argument("--decoder-embed-dim", type=int, default=64)
    ap.add_argument("--pretrain-cases", type=int, default=96)
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--labelled", type=int, default=4)
    ap.add_argument("--test-cases", type=int, default=16)
    ap.add_argument("--ft-steps", type=int, default=120)
    ap.add_argument("--ft-batch", type=int, default=2)
    ap.add_argument("--ft-lr", type=float, default=3e-4)
    ap.add_argument("--feature-size", type=int, default=8, help="UNETR conv width")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/bench-hi-end")
    ap.add_argument("--picture", help="reconstruction picture of the first pretrained hi-end arm on a test case")
    args = ap.parse_args()

    import mae_core
    from mae_core.train.trainer import TrainConfig, Trainer
    from mae_medical.unetr import to_unetr

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pre = make_cases(range(args.pretrain_cases), 0, args.size, False)
    lab = make_cases(range(args.labelled), 1, args.size, True)
    test = make_cases(range(args.labelled, args.labelled + args.test_cases), 1, args.size, True)
    print(json.dumps({"data_s": round(time.time() - t0, 1)}), flush=True)
    results = []
    for seed in args.seeds:
        for arm in args.arms:
            torch.manual_seed(seed)
            model = mae_core.create_model(
                "hi-end-mae", domain="medical", img_size=args.size, patch_size=args.patch, embed_dim=args.embed_dim,
                num_heads=args.num_heads, decoder_embed_dim=args.decoder_embed_dim, depth=12,
                decoder_kind="plain" if arm == "scratch" else arm)
            row = {"arm": arm, "seed": seed,
                   "decoder_params": sum(p.numel() for p in model.decoder.parameters())}
            t = time.time()
            if arm != "scratch":
                cfg = TrainConfig(epochs=args.pretrain_epochs, batch_size=args.batch_size, lr=args.pretrain_lr,
                                  warmup_epochs=max(1, args.pretrain_epochs // 10), betas=(0.9, 0.95),
                                  weight_decay=0.05, seed=seed, device="cpu", progress=False,
                                  log_every=10 ** 6)
                summary = Trainer(model, pre, cfg).fit()
                row["pretrain_loss"] = summary.get("final_loss", summary.get("loss"))
            row["pretrain_s"] = round(time.time() - t, 1)
            if args.picture and arm == "hi-end":
                from mae_medical.viz import save_volume_reconstruction

                save_volume_reconstruction(model, {"image": test[0]["image"]}, args.picture, seed=seed,
                                           title=f"Hi-End-MAE {args.size}^3/{args.patch}, {args.pretrain_epochs} ep.")
                args.picture = None
            torch.manual_seed(seed)
            net, _ = to_unetr(model, out_channels=2, img_size=args.size, feature_size=args.feature_size)
            epochs = max(1, args.ft_steps * args.ft_batch // len(lab))
            cfg = TrainConfig(epochs=epochs, batch_size=args.ft_batch, lr=args.ft_lr, warmup_epochs=epochs / 10,
                              betas=(0.9, 0.999), weight_decay=1e-5, seed=seed, device="cpu", progress=False,
                              log_every=10 ** 6)
            t = time.time()
            Trainer(SegTask(net), lab, cfg).fit()
            row["finetune_s"] = round(time.time() - t, 1)
            row["dice"] = round(dice(net, test), 4)
            results.append(row)
            print(json.dumps(row), flush=True)
            (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    if args.seeds and len(results) > 1:
        for arm in args.arms:
            d = [r["dice"] for r in results if r["arm"] == arm]
            print(f"{arm:8s} dice {sum(d) / len(d):.4f} over {len(d)} seeds: {d}")


if __name__ == "__main__":
    main()
