"""Extra ``mae-medical`` commands: ``impute`` (reconstruct an absent MRI modality as NIfTI), ``export-unetr``
and ``anomaly`` (registered when the anomaly method is importable)."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import torch

from mae_core.api import load_run
from mae_core.checkpoint import atomic_write, check_writable
from mae_core.errors import DataError, MaeError
from mae_core.layers import grid_shape
from mae_core.registry import CommandSpec, register_command

from .data.brain_folder import DEFAULT_PATTERNS, check_case, find_modality_files, parse_patterns


def load_method_run(path: str, method: str):
    """``mae_core.load_run`` of a run that must be of ``method``."""
    run = load_run(path)
    if run.method != method:
        raise MaeError(f"{path}: a {method} run is needed, this one is {run.method!r}")
    return run


def write_nifti_like(path: str | Path, data, ref_path: str | Path) -> Path:
    """Write ``data`` (3-D array on the reference grid) as NIfTI with the reference file's affine and header,
    atomically (``.nii`` or ``.nii.gz``)."""
    import nibabel as nib
    import numpy as np

    ref = nib.load(str(ref_path))
    arr = np.asarray(data, dtype=np.float32)
    if arr.shape != tuple(ref.shape[:3]):
        raise MaeError(f"internal: output shape {arr.shape} differs from the input grid {tuple(ref.shape[:3])}")
    hdr = ref.header.copy()
    hdr.set_data_dtype(np.float32)
    img = nib.Nifti1Image(arr, ref.affine, header=hdr)
    img.header.set_slope_inter(1.0, 0.0)
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise MaeError(f"{path}: output must end in .nii or .nii.gz")
    blob = img.to_bytes()
    if path.name.endswith(".gz"):
        blob = gzip.compress(blob, compresslevel=6)

    def w(tmp):
        with open(tmp, "wb") as fh:
            fh.write(blob)

    atomic_write(path, w)
    return path


@torch.no_grad()
def impute_case(model, case_dir: str | Path, missing: str, patterns: list[str] | None = None,
                spacing=(2.0, 2.0, 2.0), inputs: list[str] | None = None, overlap: float = 0.5,
                compare: bool = False, draws: int = 0, seed: int = 0, sw_batch_size: int = 32) -> dict:
    """Reconstruct modality ``missing`` of a case from its present modalities.

    Returns ``{"image": (X, Y, Z) array on the input file's grid, "ref_file": path, "work": {...}}`` where
    ``work`` holds the volumes in the model's space (RAS, resampled, z-scored) for pictures and metrics, and, with
    ``compare=True`` and the real file present, the real modality there too.
    """
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import NormalizeIntensity

    from .data.brain_folder import geometry_transform

    case_dir = Path(case_dir)
    pats = parse_patterns(patterns or DEFAULT_PATTERNS)
    if missing not in model.modalities:
        raise MaeError(f"case {case_dir.name}: modality {missing!r} is not known to the model "
                       f"(it knows {', '.join(model.modalities)})")
    inputs = inputs or [m for m in model.modalities if m != missing]
    for m in inputs:
        if m not in model.modalities:
            raise MaeError(f"case {case_dir.name}: modality {m!r} is not known to the model "
                           f"(it knows {', '.join(model.modalities)})")
        if m not in pats:
            raise DataError(f"case {case_dir.name}: no file pattern for modality {m!r}")
    if missing in inputs:
        raise MaeError(f"case {case_dir.name}: {missing!r} is both an input and the modality to impute")
    found = find_modality_files(case_dir, inputs, pats, allow_missing=True)
    inputs = [m for m in inputs if m in found]
    files = check_case(case_dir, inputs, pats)
    keys = list(inputs)
    real_file = None
    if compare and missing in pats:
        # looked up beside the inputs found above, so a case without the modality (the point of imputing it) is
        # not an error: there is just nothing to compare with
        real = find_modality_files(case_dir, [*inputs, missing], pats, allow_missing=True)
        if missing in real:
            real_file = check_case(case_dir, [missing, inputs[0]], pats, allow_missing=False)[missing]
            keys.append(missing)
    geom = geometry_transform(keys, spacing)
    d = geom({k: str(files[k]) if k in files else str(real_file) for k in keys})
    norm = NormalizeIntensity(nonzero=True, channel_wise=True)
    vols = {k: torch.as_tensor(norm(d[k])).float() for k in keys}  # (1, X, Y, Z)
    brain = torch.zeros_like(vols[inputs[0]][0], dtype=torch.bool)
    for m in inputs:
        brain |= torch.as_tensor(d[m])[0] != 0
    x = torch.cat([vols[m] for m in inputs])[None]  # (1, Mp, X, Y, Z)
    roi = (model.config.img_size,) * 3

    # the encoder sees the pre-training budget of visible tokens (visible_fraction of all modalities' tokens),
    # drawn from the present modalities only, and the reconstructions of ``draws`` random draws are averaged;
    # draws=0 shows every token of the present modalities instead
    length = math.prod(grid_shape(roi, model.config.patch_size))
    budget = min(int(model.config.visible_fraction * len(model.modalities) * length), len(inputs) * length)
    g = torch.Generator().manual_seed(seed)

    def predictor(t):
        batch = {m: t[:, j:j + 1] for j, m in enumerate(inputs)}
        if draws <= 0:
            return model.reconstruct(batch)[missing]
        return sum(model.reconstruct(batch, generator=g, num_visible=budget)[missing] for _ in range(draws)) / draws

    model.eval()
    pred = sliding_window_inference(x, roi, sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap,
                                    mode="gaussian",
                                    padding_mode="constant", cval=0.0)[0]  # (1, X, Y, Z)
    pred = torch.where(brain[None], pred, torch.zeros_like(pred))
    ref = d[inputs[0]]
    mt = MetaTensor(pred.clone(), meta=dict(ref.meta), applied_operations=list(ref.applied_operations))
    back = geom.inverse({inputs[0]: mt})[inputs[0]]
    image = torch.as_tensor(back)[0].numpy()
    work = {"inputs": {m: vols[m][0] for m in inputs}, "imputed": pred[0], "brain": brain}
    if real_file is not None:
        work["real"] = vols[missing][0]
    return {"image": image, "ref_file": files[inputs[0]], "inputs": inputs, "work": work}


def _impute_args(p):
    p.add_argument("--run", required=True, metavar="DIR", help="a bm-mae pretraining (or saved model) directory")
    p.add_argument("--case", required=True, metavar="DIR", help="case folder with one NIfTI per present modality")
    p.add_argument("--missing", required=True, help="modality to reconstruct (e.g. flair)")
    p.add_argument("--inputs", nargs="+", help="modalities to use (default: every other modality found)")
    p.add_argument("--out", required=True, metavar="NII", help="output .nii.gz (input's affine and header)")
    p.add_argument("--patterns", nargs="+", default=None, help="file-name patterns 'name=suf1|suf2' (default: "
                   "BraTS 2021 / 2023 / BrainLes names)")
    p.add_argument("--spacing", nargs=3, type=float, default=None,
                   help="working voxel spacing in mm (default: the run's data spacing, else 2 2 2)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    p.add_argument("--draws", type=int, default=0, help="0: every token of the present modalities visible (default, "
                   "best in docs/benchmarks/medical.md); N: average N draws of the pre-training visible-token budget")
    p.add_argument("--seed", type=int, default=0, help="seed of the visible-token draws")
    p.add_argument("--figure", metavar="PNG", help="also draw the inputs, the imputed and (if present) the real "
                   "modality")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _impute_run(args) -> int:
    from .metrics import psnr_in_mask, ssim_in_mask
    from .viz import save_imputation_figure

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise MaeError(f"{out}: exists (use --overwrite)")
    check_writable(out, "imputed volume")  # a read-only --out fails now, not after the imputation
    if args.figure:
        check_writable(args.figure, "figure")
    run = load_method_run(args.run, "bm-mae")
    spacing = args.spacing or getattr(run.config.data if run.config else None, "spacing", None) or [2.0, 2.0, 2.0]
    res = impute_case(run.model, args.case, args.missing, args.patterns, spacing, args.inputs, args.overlap,
                      compare=True, draws=args.draws, seed=args.seed)
    write_nifti_like(out, res["image"], res["ref_file"])
    summary = {"out": str(out), "inputs": res["inputs"], "missing": args.missing, "spacing": list(spacing)}
    w = res["work"]
    if "real" in w:
        summary["psnr"] = psnr_in_mask(w["imputed"], w["real"], w["brain"])
        summary["ssim"] = ssim_in_mask(w["imputed"], w["real"], w["brain"])
        zero = torch.zeros_like(w["real"])
        summary["baseline_mean_psnr"] = psnr_in_mask(zero, w["real"], w["brain"])
        summary["baseline_mean_ssim"] = ssim_in_mask(zero, w["real"], w["brain"])
    if args.figure:
        save_imputation_figure(w.get("real"), w["imputed"], w["inputs"], args.missing, args.figure)
        summary["figure"] = args.figure
    print(json.dumps(summary))
    return 0


register_command(CommandSpec(name="impute", domain="medical",
                             help="reconstruct an absent MRI modality of a case from the present ones (NIfTI out)",
                             add_arguments=_impute_args, run=_impute_run))


UNETR_METHODS = ("bm-mae", "hi-end-mae")


def _export_args(p):
    p.add_argument("--run", required=True, metavar="DIR", help="a bm-mae or hi-end-mae run with patch size 16 or 8")
    p.add_argument("--out", required=True, metavar="FILE", help="UNETR weights (.safetensors)")
    p.add_argument("--out-channels", type=int, default=4, help="segmentation classes of the UNETR head")
    p.add_argument("--modalities", nargs="+", help="input channels, in order (default: all of the model's)")
    p.add_argument("--img-size", type=int, help="UNETR input size (default: the model's crop size)")


def _export_run(args) -> int:
    from safetensors.torch import save_file

    from .unetr import to_unetr

    run = load_run(args.run)
    if run.method not in UNETR_METHODS:
        raise MaeError(f"{args.run}: a {' or '.join(UNETR_METHODS)} run is needed, this one is {run.method!r}")
    model = run.model
    net, report = to_unetr(model, args.out_channels, args.modalities, args.img_size)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write(args.out, lambda tmp: save_file(state, tmp, metadata={"format": "monai-unetr"}))
    print(json.dumps({"out": args.out, **report}))
    return 0


register_command(CommandSpec(name="export-unetr", domain="medical",
                             help="load a BM-MAE or Hi-End-MAE encoder into MONAI's UNETR and save its weights",
                             add_arguments=_export_args, run=_export_run))


# ---- anomaly -------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_anomaly(model, dataset, num_masks: int = 8, seed: int = 0, batch_size: int = 128) -> dict:
    """Image-level AUROC of the masked-reconstruction score and pixel-level AUROC of the maps (when the dataset has
    lesion masks); returns scores and maps too."""
    from torch.utils.data import DataLoader

    from mae_core.data.utils import collate_dicts
    from mae_core.eval import mean_auc

    g = torch.Generator().manual_seed(seed)
    scores, maps, labels, lesions = [], [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_dicts):
        s, m = model.anomaly(batch["image"], num_masks, generator=g)
        scores.append(s), maps.append(m), labels.append(batch["label"])
        if "lesion" in batch:
            lesions.append(batch["lesion"])
    s, m, y = torch.cat(scores), torch.cat(maps), torch.cat(labels)
    out = {"image_auroc": mean_auc(s[:, None], y[:, None]), "scores": s, "maps": m, "labels": y}
    if lesions:
        les = torch.cat(lesions)
        out["pixel_auroc"] = mean_auc(m.reshape(-1, 1), les.reshape(-1, 1))
    return out


def save_anomaly_figure(images, maps, labels, lesions, path, num: int = 6):
    from mae_core.viz import pyplot, save_figure

    plt = pyplot()
    pos = (labels == 1).nonzero().flatten()[: num // 2].tolist()
    neg = (labels == 0).nonzero().flatten()[: num - len(pos)].tolist()
    idx = pos + neg
    fig, axes = plt.subplots(3, len(idx), figsize=(1.6 * len(idx), 5), layout="constrained")
    vmax = float(maps[idx].max())
    for j, i in enumerate(idx):
        axes[0, j].imshow(images[i, 0].numpy(), cmap="gray")
        axes[0, j].set_title("lesion" if labels[i] else "normal", fontsize=7)
        axes[1, j].imshow(maps[i].numpy(), cmap="inferno", vmin=0, vmax=vmax)
        if lesions is not None:
            axes[2, j].imshow(lesions[i].float().numpy(), cmap="gray")
        for r in range(3):
            axes[r, j].set_xticks([]), axes[r, j].set_yticks([])
    axes[0, 0].set_ylabel("image", fontsize=7)
    axes[1, 0].set_ylabel("anomaly map", fontsize=7)
    axes[2, 0].set_ylabel("true lesion", fontsize=7)
    return save_figure(fig, path)


def _anomaly_args(p):
    p.add_argument("--run", required=True, metavar="DIR", help="an anomaly-mae pretraining run (normal images only)")
    p.add_argument("--num-masks", type=int, default=None, help="K random masks (default: the model's num_masks)")
    p.add_argument("--num-test", type=int, default=None, help="test images of the embedded set")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks")
    p.add_argument("--figure", metavar="PNG", help="picture of the anomaly maps (default: <run>/pictures/anomaly.png)")


def _anomaly_run(args) -> int:
    import dataclasses

    from mae_core.config import from_dict
    from mae_core.rundir import RunDir

    from .data.xray import ChestAnomaly, ChestAnomalyConfig

    run = load_method_run(args.run, "anomaly-mae")
    model = run.model
    same = run.config is not None and isinstance(run.config.data, ChestAnomalyConfig)
    data = dataclasses.asdict(run.config.data) if same else {}
    if args.num_test:
        data["num_test"] = args.num_test
    ds = ChestAnomaly(from_dict(ChestAnomalyConfig, data, "data"), "test")
    res = evaluate_anomaly(model, ds, args.num_masks, args.seed)
    fig = args.figure or str(Path(args.run) / "pictures" / "anomaly.png")
    save_anomaly_figure(ds.images, res["maps"], res["labels"], ds.lesions, fig)
    summary = {"image_auroc": res["image_auroc"], "pixel_auroc": res.get("pixel_auroc"),
               "num_masks": args.num_masks or model.config.num_masks, "num_test": len(ds), "figure": fig}
    RunDir(args.run, create=False).write_summary({"anomaly": summary})
    print(json.dumps(summary))
    return 0


register_command(CommandSpec(name="anomaly", domain="medical",
                             help="anomaly scores, image / pixel AUROC and anomaly maps of an anomaly-mae run",
                             add_arguments=_anomaly_args, run=_anomaly_run))
