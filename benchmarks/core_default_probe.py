"""Does the embedded default image run learn something raw pixels do not give? Pretrains the image MAE on the
embedded shapes (any option of ``mae_core.pretrain`` as ``--set key=value``), then reports the linear probe and the
whitened kNN probe on its frozen features, on a random-init encoder of the same architecture, and on the raw pixels
(the same probes on the flattened normalised images).

    uv run python benchmarks/core_default_probe.py --out runs/core-default [--set epochs=30 --set patch_size=8]
    uv run python benchmarks/core_default_probe.py --out runs/core-default --raw-only

Writes ``results.json`` in ``--out`` and prints one line per probe.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def raw_pixels(data_options: dict) -> dict:
    from mae_core.data import ShapesConfig, SyntheticShapes
    from mae_core.eval.knn import knn_classify
    from mae_core.eval.linear import linear_probe

    cfg = ShapesConfig(**data_options)
    tr, te = SyntheticShapes(cfg, "train"), SyntheticShapes(cfg, "test")
    xtr, xte = tr.images.flatten(1), te.images.flatten(1)
    ytr, yte = tr.labels.long(), te.labels.long()
    return {"linear": linear_probe(xtr, ytr, xte, yte, num_classes=8)["acc"],
            "knn": knn_classify(xtr, ytr, xte, yte, k=20, num_classes=8, whiten=0.01)["acc"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the run and results.json")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of mae_core.pretrain (model / train / data field by its flag name)")
    ap.add_argument("--raw-only", action="store_true", help="only the raw-pixel probes")
    args = ap.parse_args()
    import mae_core

    opts = {k: value(v) for k, v in (s.split("=", 1) for s in args.set)}
    data_keys = {"image_size", "num_train", "num_test"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"options": opts, "raw_pixels": raw_pixels({k: v for k, v in opts.items() if k in data_keys})}
    if not args.raw_only:
        t0 = time.time()
        run = mae_core.pretrain("image-mae", out=str(out / "run"), overwrite=True, progress=False, **opts)
        res["train_s"] = round(time.time() - t0, 1)
        res["final_loss"] = json.loads((out / "run" / "summary.json").read_text()).get("final_loss")
        res["pretrained"] = {k: v["acc"] for k, v in mae_core.probe(run, kind="linear,knn").items()
                             if isinstance(v, dict)}
        torch.manual_seed(0)
        res["random_init"] = {k: v["acc"] for k, v in mae_core.probe(run, kind="linear,knn", random_init=True).items()
                              if isinstance(v, dict)}
    (out / "results.json").write_text(json.dumps(res, indent=1))
    for k in ("raw_pixels", "random_init", "pretrained"):
        if k in res:
            print(f"{k:>12}: linear {res[k]['linear']:.4f}  kNN {res[k]['knn']:.4f}")


if __name__ == "__main__":
    main()
