"""Tumour-region reconstruction metrics of a BM-MAE run on synthetic-brain test cases.

masked: the training-type mask (model(batch, generator)), error on voxels of masked patches inside the tumour
(oedema / rim / core); impute: one modality predicted from the other three fully visible (model.reconstruct).
R^2 = 1 - MSE / variance of the real values over the same voxels (pooled over cases); "masked_contrast" = (predicted
tumour mean - predicted healthy-brain mean) / (the same for the real values) over masked patches. Used for the medical
rows of docs/benchmarks.md, "What the no-argument runs show"; writes RUN/tumour_eval.json:

    uv run python benchmarks/medical_tumour_fill.py RUN [NUM_CASES=32]
"""
import json
import sys

import torch
from mae_core import load_run
from mae_core.layers import patchify
from mae_medical.data.synthetic_brain import EDEMA, generate_case

run = load_run(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 32
m = run.model.eval().cpu()
dc = run.config.data
stream = dc.seed * 2 + 1
mods = list(m.modalities)
p = m.config.patch_size
acc = {k: {mm: [] for mm in mods} for k in ("masked_tum", "masked_healthy", "imp_tum", "imp_brain")}
with torch.no_grad():
    for ci in range(n):
        vols, _, tissue = generate_case(ci, dc.image_size, stream, dc.noise, mods)
        batch = {k: v[None, None] for k, v in vols.items()}
        tum = (tissue >= EDEMA).float()  # oedema, enhancing rim, necrotic core (as SyntheticBrain.tumour)
        brain = (tissue != 0).float()
        out = m(batch, generator=torch.Generator().manual_seed(ci))
        L = out.mask.shape[1] // len(mods)
        tp = patchify(tum[None, None], p)[0]  # (L, P)
        hp = patchify((brain - tum)[None, None], p)[0]
        for i, mm in enumerate(mods):
            sl = slice(i * L, (i + 1) * L)
            w = out.mask[0, sl][:, None] * tp
            real = out.target[0, sl]
            pred = out.pred[0, sl].float()
            sel = w > 0
            acc["masked_tum"][mm].append((real[sel], pred[sel]))
            selh = (out.mask[0, sl][:, None] * hp) > 0
            acc["masked_healthy"][mm].append((real[selh], pred[selh]))
        for mm in mods:
            b3 = {k: v for k, v in batch.items() if k != mm}
            rec = m.reconstruct(b3)[mm][0, 0]
            real = vols[mm]
            acc["imp_tum"][mm].append((real[tum > 0], rec[tum > 0]))
            acc["imp_brain"][mm].append((real[brain > 0], rec[brain > 0]))
res = {}
for k, d in acc.items():
    res[k] = {}
    for mm, lst in d.items():
        r = torch.cat([a for a, _ in lst]); q = torch.cat([b for _, b in lst])
        mse = float(((r - q) ** 2).mean()); var = float(r.var())
        res[k][mm] = {"mse": round(mse, 4), "r2": round(1 - mse / var, 3), "n": int(r.numel())}
        res[k][mm]["real_mean"] = float(r.mean()); res[k][mm]["pred_mean"] = float(q.mean())
    res[k]["mean_r2"] = round(sum(v["r2"] for v in res[k].values()) / len(mods), 3)
# tumour contrast kept in masked patches: (pred tumour mean - pred healthy-brain mean) / (same for the real values)
res["masked_contrast"] = {mm: round((res["masked_tum"][mm]["pred_mean"] - res["masked_healthy"][mm]["pred_mean"])
                                    / (res["masked_tum"][mm]["real_mean"] - res["masked_healthy"][mm]["real_mean"]), 3)
                          for mm in mods}
print(json.dumps({"masked_contrast": res["masked_contrast"]}))
print(json.dumps({"run": sys.argv[1], **{k: {"mean_r2": v["mean_r2"], **{mm: v[mm]["r2"] for mm in mods}} for k, v in res.items() if k != "masked_contrast"}}))
json.dump(res, open(f"{sys.argv[1]}/tumour_eval.json", "w"), indent=1)
