"""M3AE in miniature (run by hand; results go to docs/benchmarks/text.md, section "multimodal").

Embedded image-report pairs (``image-reports``: synthetic 32 x 32 chest slices, reports written from the
generator's finding / size / side / count). The paper's ablation (Table 4 of Chen et al. 2022) in miniature: the same
model, seed, data order and step count with

- ``mlm_itm``: MLM + ITM only (``mim_weight 0``);
- ``mim_last``: + MIM from the fusion output (``mim_layer -1``);
- ``mim_mid``: + MIM from the image stream entering fusion layer 1 of 2 (``mim_layer 1``): M3AE;
- ``random``: the same architecture untrained (control).

Evaluation, frozen:

- image-text retrieval on the test split (``--retrieval`` pairs): every (image, report) pair scored by the pretrained
  ITM head; R@1 image->text and text->image, a hit when the top report says the same as the true one (same
  generator parameters: synthetic reports repeat); ``chance`` is the hit rate of a random pick;
- closed-question VQA: questions generated per image with answers from the generator (finding present, normal,
  side, count, size; 7 answers), the pooled fused (image, question) features (``encode``), a linear probe (mae-core,
  AdamW recipe) trained on the questions of training images, accuracy on those of test images; ``prior`` answers
  each question with its most frequent training answer.

Each arm writes to ``<out>/results.json`` as it finishes; rerunning skips arms done.

    OMP_NUM_THREADS=1 uv run python benchmarks/text_m3ae.py --out runs/m3ae --steps 500 --seed 0
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter

import torch

import mae_text  # noqa: F401
from bench_common import keyed_results
from mae_core.checkpoint import atomic_write_json
from mae_core.data.utils import collate_dicts
from mae_core.eval.linear import linear_probe
from mae_core.train import Trainer, TrainConfig
from mae_text.image_reports import ANSWERS, ImageReportConfig, ImageReports, closed_questions
from mae_text.m3ae_viz import visualize_m3ae
from mae_text.methods.m3ae import M3AE, M3AEConfig, adapt_m3ae

QTYPES = {"finding": "finding", "normal": "normal", "lesion": "side", "there": "count", "large": "size"}
ARMS = {"random": {}, "mlm_itm": {"mim_weight": 0.0}, "mim_last": {"mim_layer": -1}, "mim_mid": {"mim_layer": 1}}


@torch.no_grad()
def retrieval(model, ds, n: int) -> dict:
    batch = collate_dicts([ds[i] for i in range(n)])
    enc = model.text.tokenize_text(batch)
    text = model.text_tower(enc.input_ids, enc.attention_mask)
    image = model.image_tower(batch["image"])
    scores = torch.empty(n, n)  # [image, text]
    for i in range(n):
        t, v = model.fuse(text, enc.attention_mask, image[i:i + 1].expand(n, -1, -1))
        logits = model.itm_head(model.pooled(t, v))
        scores[i] = logits[:, 1] - logits[:, 0]
    key = torch.as_tensor(batch["key"])
    same = (key[:, None] == key[None]).float()
    return {"i2t_r1": 100 * float((key[scores.argmax(1)] == key).float().mean()),
            "t2i_r1": 100 * float((key[scores.argmax(0)] == key).float().mean()),
            "chance": 100 * float(same.mean())}


def questions(ds, seed: int) -> list[tuple[int, str, int, str]]:
    """(image index, question, answer index, question type) for every image of ``ds``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    p = ds.params
    for i in range(len(ds)):
        for q, a in closed_questions(int(p["finding"][i]), int(p["size"][i]), int(p["side"][i]),
                                     int(p["count"][i]), g):
            qtype = QTYPES["finding" if q.startswith("is there") else q.split()[-2]]
            out.append((i, q, ANSWERS.index(a), qtype))
    return out


@torch.no_grad()
def vqa_features(model, ds, qs, bs: int = 256) -> torch.Tensor:
    feats = []
    for s in range(0, len(qs), bs):
        chunk = qs[s:s + bs]
        batch = {"image": torch.stack([ds[i]["image"] for i, *_ in chunk]), "text": [q for _, q, _, _ in chunk]}
        feats.append(model.encode(batch))
    return torch.cat(feats)


def vqa(model, train, test, seed: int, n_train: int) -> dict:
    qtr = [q for q in questions(train, seed) if q[0] < n_train]
    qte = questions(test, seed + 1)
    xtr, xte = vqa_features(model, train, qtr), vqa_features(model, test, qte)
    ytr, yte = torch.tensor([q[2] for q in qtr]), torch.tensor([q[2] for q in qte])
    res = {"all": 100 * linear_probe(xtr, ytr, xte, yte, num_classes=len(ANSWERS), seed=seed)["acc"]}
    prior = {}
    for qtype in sorted({q[3] for q in qte}):
        mtr = torch.tensor([q[3] == qtype for q in qtr])
        mte = torch.tensor([q[3] == qtype for q in qte])
        res[qtype] = 100 * linear_probe(xtr[mtr], ytr[mtr], xte[mte], yte[mte], num_classes=len(ANSWERS),
                                        seed=seed)["acc"]
        top = Counter(ytr[mtr].tolist()).most_common(1)[0][0]
        prior[qtype] = 100 * float((yte[mte] == top).float().mean())
    prior["all"] = sum(prior[t] * sum(q[3] == t for q in qte) for t in prior) / len(qte)
    return {"acc": res, "prior": prior, "n_train": len(qtr), "n_test": len(qte)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/m3ae")
    ap.add_argument("--arms", default="random,mlm_itm,mim_last,mim_mid")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retrieval", type=int, default=200, help="test pairs ranked against each other")
    ap.add_argument("--vqa-train", type=int, default=1024, help="training images whose questions train the probe")
    ap.add_argument("--picture", default=None, help="write the mim_mid arm's picture here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    path, results = keyed_results(args.out)
    dcfg = ImageReportConfig()
    t0 = time.process_time()
    train, test = ImageReports(dcfg, "train"), ImageReports(dcfg, "test")
    results["data_cpu_s"] = round(time.process_time() - t0, 1)
    for arm in args.arms.split(","):
        key = f"{arm}/seed{args.seed}/steps{args.steps}"
        if key in results:
            print(f"{key}: done before, skipped")
            continue
        torch.manual_seed(args.seed)
        model = M3AE(adapt_m3ae(M3AEConfig(**ARMS[arm]), dcfg, train))
        t0 = time.process_time()
        log = {}
        if arm != "random":
            epochs = -(-args.steps * args.batch_size // len(train))
            tc = TrainConfig(epochs=epochs, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             warmup_epochs=0.5, weight_decay=0.01, betas=(0.9, 0.98), clip_grad=1.0,
                             seed=args.seed, progress=False, log_every=100)
            trainer = Trainer(model, train, tc)
            summary = trainer.fit()
            model = trainer.raw_model
            log = {"final_loss": round(float(summary.get("final_loss", float("nan"))), 4)}
        model.eval()
        with torch.no_grad():
            o = M3AE(dataclasses.replace(model.config, mim_weight=1.0)).eval()  # every term, whatever was trained
            o.load_state_dict(model.state_dict())
            m = o(collate_dicts([test[i] for i in range(128)]), generator=torch.Generator().manual_seed(0))
        log.update({f"test_{k}": round(v, 4) for k, v in m.metrics.items()})
        log["train_cpu_s"] = round(time.process_time() - t0, 1)
        t0 = time.process_time()
        log["retrieval"] = retrieval(model, test, args.retrieval)
        log["vqa"] = vqa(model, train, test, args.seed, args.vqa_train)
        log["eval_cpu_s"] = round(time.process_time() - t0, 1)
        results[key] = log
        atomic_write_json(path, results)
        print(key, json.dumps(log), flush=True)
        if arm == "mim_mid" and args.picture:
            visualize_m3ae(model, test, args.picture, num=4)


if __name__ == "__main__":
    main()
