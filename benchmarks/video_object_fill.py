"""Object-reconstruction metric of a VideoMAE run on the held-out moving-shapes clips.

For every hidden pixel inside the object (object mask = 1, tube hidden from the encoder):
  hit   = predicted colour closer to the object's colour than to the background's colour at that pixel
  alpha = where the prediction lies on the background -> object colour line (0 = background, 1 = object), mean
  mse   = MSE of the prediction vs the truth there;  bg_mse = MSE of "predict the background" there
The background is static, so the background at a pixel = the mean over the clip's frames where the object is not
there (pixels covered in every frame are skipped).  The object's colour = the median clip colour inside the mask.
'vis' = restricted to frames where some object pixels are visible (the object is partly visible).
Used for the video rows of docs/benchmarks.md, "What the no-argument runs show":

    uv run python benchmarks/video_object_fill.py RUN [--seeds 4] [--half]
"""
import argparse
import json

import torch

from mae_core.api import load_run


def metric(model, clips_u8, masks, seeds=4, bs=64, half=False):
    video_all = (clips_u8.float() / 255 - 0.5) / 0.5
    x01 = clips_u8.float() / 255  # (n,3,T,S,S)
    obj = masks.bool()  # (n,T,S,S)
    n = len(clips_u8)
    # background per pixel
    free = (~obj).float()[:, None]  # (n,1,T,S,S)
    cnt = free.sum(2)  # (n,1,S,S)
    bg = (x01 * free).sum(2) / cnt.clamp(min=1)  # (n,3,S,S)
    bg_ok = (cnt[:, 0] > 0)  # (n,S,S)
    # object colour: median inside mask
    oc = torch.stack([x01[i].permute(1, 2, 3, 0)[obj[i]].median(0).values for i in range(n)])  # (n,3)
    tot = {k: 0.0 for k in ("hit", "mse", "bg_mse", "count", "vhit", "vmse", "vbg_mse", "vcount", "frames_vis", "alpha", "valpha")}
    model.eval()
    if half:  # the picture's masks: per clip, of seeds 0..15, the one hiding about half of the object
        from mae_video.viz import object_mask_seeds
        per_clip = object_mask_seeds(model, video_all, masks)
        seeds, bs = 1, 1
    for s in range(seeds):
        g = torch.Generator().manual_seed(1000 + s)
        for a in range(0, n, bs):
            v = video_all[a:a + bs]
            if half:
                g = torch.Generator().manual_seed(per_clip[a])
            with torch.no_grad():
                hidden, recon = model.reconstruct_video(v, generator=g)[:2]
            pred = (recon * 0.5 + 0.5).clamp(0, 1)  # (b,3,T,S,S)
            hid = hidden.bool()
            o = obj[a:a + bs]
            sel = o & hid & bg_ok[a:a + bs, None]  # (b,T,S,S)
            visible_obj = (o & ~hid).flatten(2).sum(-1) > 0  # (b,T)
            p = pred.permute(0, 2, 3, 4, 1)  # (b,T,S,S,3)
            t = x01[a:a + bs].permute(0, 2, 3, 4, 1)
            b_ = bg[a:a + bs].permute(0, 2, 3, 1)[:, None].expand_as(p)
            c_ = oc[a:a + bs][:, None, None, None].expand_as(p)
            d_obj = ((p - c_) ** 2).sum(-1)
            d_bg = ((p - b_) ** 2).sum(-1)
            hit = (d_obj < d_bg).float()
            dirn = c_ - b_
            alpha = ((p - b_) * dirn).sum(-1) / (dirn ** 2).sum(-1).clamp(min=1e-4)
            se = ((p - t) ** 2).mean(-1)
            bse = ((b_ - t) ** 2).mean(-1)
            for pre, m in (("", sel), ("v", sel & visible_obj[..., None, None])):
                tot[pre + "hit"] += hit[m].sum().item()
                tot[pre + "alpha"] += alpha[m].clamp(-0.5, 1.5).sum().item()
                tot[pre + "mse"] += se[m].sum().item()
                tot[pre + "bg_mse"] += bse[m].sum().item()
                tot[pre + "count"] += m.sum().item()
            tot["frames_vis"] += visible_obj.float().mean().item() * len(v)
    out = {"obj_hit": tot["hit"] / tot["count"], "obj_alpha": tot["alpha"] / tot["count"], "obj_mse": tot["mse"] / tot["count"],
           "bg_baseline_mse": tot["bg_mse"] / tot["count"],
           "vis_obj_hit": tot["vhit"] / max(tot["vcount"], 1), "vis_obj_alpha": tot["valpha"] / max(tot["vcount"], 1),
           "vis_obj_mse": tot["vmse"] / max(tot["vcount"], 1),
           "vis_bg_baseline_mse": tot["vbg_mse"] / max(tot["vcount"], 1),
           "frac_frames_obj_partly_visible": tot["frames_vis"] / (n * seeds)}
    return {k: round(v, 4) for k, v in out.items()}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--mask-ratio", type=float, default=None)
    ap.add_argument("--half", action="store_true", help="the picture's mask choice (about half the object hidden)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    r = load_run(a.run)
    model = r.model.cpu()
    if a.mask_ratio is not None:
        model.mask_ratio = a.mask_ratio
    ds = r.dataset("test")
    res = metric(model, ds.clips, ds.masks, a.seeds, half=a.half)
    res["half"] = a.half
    res["run"] = a.run
    print(json.dumps(res))
