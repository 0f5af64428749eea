"""Trajectory MAE: masked pretraining of VectorNet on driving scenes, after Li et al., "Pre-training on Synthetic
Driving Data for Trajectory Prediction" (yhli123/Pretraining_on_Synthetic_Driving_Data_for_Trajectory_Prediction,
``src/pretrain.py`` ``MaskedVectorNet``, ``src/modeling/lib.py``).

Encoder: every polyline (the focal agent's history, other agents' histories, lane segments) is a set of vectors; a
VectorNet polyline subgraph (:mod:`mae_graph.gnn.vectornet`) gives one feature per polyline and a global
self-attention graph relates them. Coordinates enter divided by ``coord_scale`` (10 m); in pretraining each scene is
rotated by a random angle (the reference's ``Theta``).

Pretraining, drawn per sample (``map_prob`` = 0.7 map, as the reference's ``np.random.rand() < 0.70``):

* map reconstruction: ``mask_ratio`` (50 %) of the non-focal polylines (agents and lanes: the reference's
  ``length_scene = len(input_list) - 1``) are dropped from the encoder, ``int(n (1 - ratio))`` kept; the decoder
  queries each of their vectors: its features with the coordinates of every vector but the first replaced by a
  learned map mask token, plus a sin-cos position of (polyline slot, vector index); L1 to the true coordinates,
  averaged per polyline, then over the dropped polylines;
* trajectory reconstruction: the focal agent's history leaves the encoder and is queried the same way (its own
  mask token); the head predicts ``modes`` (6) versions; per mode the L1 over the polyline; winner-take-all (the
  lowest mode) plus, while some mode has never won in the batch so far, ``unused_weight`` (0.05) x the loss of the
  least-used mode (the reference's running ``count``, samples in batch order).

Decoders (one per task, as the reference): ``Linear`` over [queries; polyline states], one pre-norm transformer
block over them (queries attend to each other and to the kept polylines), LayerNorm, ``h + MLP(h)`` + Linear.

Fine-tuning (``mae-graph traj-predict``, :mod:`mae_graph.predict`): a multi-modal head on the focal agent's encoded
feature predicts 6 futures (3 s) and their scores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.contract import PretrainedMixin
from mae_core.errors import ConfigError
from mae_core.layers.blocks import Block
from mae_core.layers.pos_embed import sincos_1d
from mae_core.masking import gather_tokens, padded_masking, uniform_noise
from mae_core.models import ModelOutput

from ..gnn.vectornet import GlobalGraph, MultiModalHead, PolylineSubgraph, ResidualHead

COORDS = 4  # x_start, y_start, x_end, y_end: the columns a mask token replaces and the decoders predict


@dataclass
class TrajMAEConfig:
    # renamed to the core's field name: runs saved with the old name still load
    __aliases__: ClassVar[dict] = {"decoder_heads": "decoder_num_heads"}
    hidden: int = field(64, "width of the polyline features, a multiple of 4 (the reference: 128)", ge=4)
    in_features: int = field(8, "features per vector (set from the data)", ge=COORDS)
    subgraph_depth: int = field(3, "polyline subgraph layers (VectorNet: 3)", ge=1)
    global_depth: int = field(1, "global graph self-attention layers (VectorNet: 1)", ge=1)
    global_heads: int = field(1, "global graph heads (the reference's GlobalGraph: 1)", ge=1)
    decoder_num_heads: int = field(2, "decoder heads (the reference's GlobalGraphRes: 2 half-width heads)", ge=1)
    modes: int = field(6, "trajectory modes of the reconstruction and prediction heads", ge=1)
    future_steps: int = field(30, "predicted future points (3 s at 10 Hz; set from the data)", ge=1)
    task: str = field("both", "pretext: both (drawn per sample), map (map only) or traj (trajectory only)",
                      choices=["both", "map", "traj"])
    map_prob: float = field(0.7, "task=both: share of samples given map reconstruction", ge=0, le=1)
    mask_ratio: float = field(0.5, "map reconstruction: share of the non-focal polylines dropped", ge=0, lt=1)
    unused_weight: float = field(0.05, "weight of the least-used mode's loss while a mode has never won", ge=0)
    rotate: bool = field(True, "pretraining: rotate each scene by a random angle")
    decoder_context: bool = field(True, "the decoder's queries attend to the kept polylines' states (off: only to "
                                        "each other, the released code's mask, under which no gradient reaches the "
                                        "encoder)")
    coord_scale: float = field(10.0, "coordinates are divided by this (m)", gt=0)


def winner_take_all(mode_losses: torch.Tensor, unused_weight: float = 0.05):
    """(N, K) per-mode losses -> (per-sample losses (N,), win counts (K,)): the lowest mode's loss, plus
    ``unused_weight`` x the loss of the least-used mode (first of the least) while its count is zero, the counts
    running over the samples in order (the reference's ``count`` / ``lowest_count`` loop)."""
    count = torch.zeros(mode_losses.shape[1], dtype=torch.long)
    out = []
    for row in mode_losses:
        best = int(torch.argmin(row.detach()))
        count[best] += 1
        low = int(torch.argmin(count))
        out.append(row[best] + (unused_weight * row[low] if count[low] == 0 else 0.0))
    return (torch.stack(out) if out else mode_losses.new_zeros(0)), count


def drop_polylines(polyline_mask: torch.Tensor, ratio: float, generator=None) -> torch.Tensor:
    """(B, P) valid polylines (packed at the front, the focal first) -> (B, P) bool, the non-focal polylines a map
    reconstruction drops: all but ``int(n (1 - ratio))`` of the ``n`` valid non-focal ones, chosen at random."""
    b, p = polyline_mask.shape
    scores = uniform_noise((b, p - 1), generator, polyline_mask.device)
    info = padded_masking(scores, polyline_mask[:, 1:].sum(1), ratio)
    drop = torch.zeros_like(polyline_mask)
    drop[:, 1:] = info.mask.bool() & polyline_mask[:, 1:]
    return drop


class TrajMAE(PretrainedMixin, nn.Module):
    # the prediction head is trained by traj-predict only: pretraining leaves it without gradients
    ddp_find_unused_parameters = True

    def __init__(self, config: TrajMAEConfig):
        super().__init__()
        self.config = c = config
        d = c.hidden
        if d % 4:
            raise ConfigError(f"--hidden: the query positions split it into two sin-cos halves, give a multiple of 4, "
                              f"got {d}")
        self.subgraph = PolylineSubgraph(c.in_features, d, c.subgraph_depth)
        self.global_graph = GlobalGraph(d, c.global_heads, c.global_depth)
        self.map_mask_token = nn.Parameter(torch.randn(COORDS) * 0.02)
        self.traj_mask_token = nn.Parameter(torch.randn(COORDS) * 0.02)
        self.query_in = nn.Linear(c.in_features, d)
        self.dec_embed = nn.ModuleDict({k: nn.Linear(d, d) for k in ("map", "traj")})
        self.decoder = nn.ModuleDict({k: Block(d, c.decoder_num_heads) for k in ("map", "traj")})
        self.dec_norm = nn.ModuleDict({k: nn.LayerNorm(d) for k in ("map", "traj")})
        self.pred_map = ResidualHead(d, COORDS)
        self.pred_traj = ResidualHead(d, c.modes * COORDS)
        self.predictor = MultiModalHead(d, c.modes, c.future_steps)

    # ---- pieces -----------------------------------------------------------------------------------------------------
    def _inputs(self, batch: dict, generator=None, rotate: bool = False):
        x = batch["vectors"].float()
        coords = x[..., :COORDS] / self.config.coord_scale
        if rotate:
            theta = uniform_noise((x.shape[0],), generator, x.device) * 2 * math.pi
            cs, sn = torch.cos(theta)[:, None, None, None], torch.sin(theta)[:, None, None, None]
            xs, ys = coords[..., 0::2], coords[..., 1::2]
            coords = torch.stack([cs * xs - sn * ys, sn * xs + cs * ys], -1).flatten(-2)
        return torch.cat([coords, x[..., COORDS:]], -1), batch["vector_mask"].bool(), batch["polyline_mask"].bool()

    def _encode(self, x, vm, kept):
        feats = self.subgraph(x, vm) * kept[..., None]
        first = torch.zeros_like(kept)
        first[:, 0] = True
        key = kept | (first & ~kept.any(1, keepdim=True))  # a scene with nothing kept attends to a zero slot
        return self.global_graph(feats, key), key

    def _positions(self, p: int, v: int, device) -> torch.Tensor:
        """(P, V, hidden): sin-cos of the polyline slot (first half) and of the vector index (second half)."""
        h = self.config.hidden // 2
        poly = sincos_1d(h, torch.arange(p).float())[:, None].expand(p, v, h)
        vec = sincos_1d(h, torch.arange(v).float())[None].expand(p, v, h)
        return torch.cat([poly, vec], -1).float().to(device)

    def pretext(self, batch: dict, generator=None, task: str | None = None, rotate: bool | None = None) -> dict:
        """One pretraining pass: per-sample task, dropped polylines, decoder outputs, per-sample losses."""
        c = self.config
        x, vm, pm = self._inputs(batch, generator, c.rotate and self.training if rotate is None else rotate)
        b, p, v, _ = x.shape
        task = task or c.task
        draw = uniform_noise((b,), generator, x.device)
        is_map = draw < c.map_prob if task == "both" else torch.full((b,), task == "map", device=x.device)
        drop = drop_polylines(pm, c.mask_ratio, generator) & is_map[:, None]
        drop[:, 0] = ~is_map
        states, key = self._encode(x, vm, pm & ~drop)
        # queries: the dropped polylines' vectors, coordinates (but the first vector's) replaced by the mask token
        token = torch.where(is_map[:, None], self.map_mask_token[None], self.traj_mask_token[None])
        first = (torch.arange(v, device=x.device) == 0)[None, None, :, None]
        qfeat = torch.cat([torch.where(first, x[..., :COORDS], token[:, None, None]), x[..., COORDS:]], -1)
        q = self.query_in(qfeat) + self._positions(p, v, x.device)
        qsel = (drop[:, :, None] & vm).reshape(b, p * v)
        nq = max(int(qsel.sum(1).max()), 1)
        ids = torch.argsort((~qsel).to(torch.int8), dim=1, stable=True)[:, :nq]  # selected vectors first, in order
        qvalid = torch.gather(qsel, 1, ids)
        queries = gather_tokens(q.reshape(b, p * v, -1), ids)
        target = gather_tokens(x[..., :COORDS].reshape(b, p * v, -1), ids)
        am = torch.cat([qvalid, key], 1)[:, None, None, :]
        if not c.decoder_context:  # query rows see the queries only (the reference's dec_self_mask)
            rows = torch.arange(am.shape[-1], device=x.device)[:, None] < nq
            own = torch.eye(am.shape[-1], dtype=torch.bool, device=x.device)  # no row left empty
            am = (am & (~rows | F.pad(qvalid, (0, key.shape[1]))[:, None, None, :])) | own
        out = {}
        for k in ("map", "traj"):
            h = self.dec_embed[k](torch.cat([queries, states], 1))
            out[k] = self.dec_norm[k](self.decoder[k](h, attn_mask=am))[:, :nq]
        pred_map = self.pred_map(out["map"])  # (B, Q, 4)
        pred_traj = self.pred_traj(out["traj"]).reshape(b, nq, c.modes, COORDS)
        # weights: each query 1 / (vectors of its polyline x dropped polylines of its sample)
        n_vec = torch.gather(vm.sum(-1), 1, ids // v).clamp(min=1)
        w = qvalid / (n_vec * drop.sum(1, keepdim=True).clamp(min=1))
        map_loss = (w * (pred_map - target).abs().mean(-1)).sum(1)
        mode_losses = (w[..., None] * (pred_traj - target[:, :, None]).abs().mean(-1)).sum(1)  # (B, K)
        traj_loss = torch.zeros_like(map_loss)
        if (~is_map).any():
            traj_loss[~is_map] = winner_take_all(mode_losses[~is_map], c.unused_weight)[0]
        return {"is_map": is_map, "drop": drop, "ids": ids, "qvalid": qvalid, "target": target,
                "pred_map": pred_map, "pred_traj": pred_traj, "mode_losses": mode_losses,
                "loss": torch.where(is_map, map_loss, traj_loss), "map_loss": map_loss}

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        r = self.pretext(batch, generator)
        is_map, s = r["is_map"], self.config.coord_scale
        loss, mode_losses = r["loss"].detach(), r["mode_losses"].detach()
        metrics = {"map_share": float(is_map.float().mean()),
                   "dropped_polylines": float(r["drop"][:, 1:].sum(1).float().mean())}
        if is_map.any():
            metrics["map_l1_m"] = float(loss[is_map].mean()) * s
        if (~is_map).any():
            metrics["traj_min_l1_m"] = float(mode_losses[~is_map].min(1).values.mean()) * s
        return ModelOutput(loss=r["loss"].mean(), pred=r["pred_map"], mask=r["drop"].float(), target=r["target"],
                           metrics=metrics)

    # ---- downstream -------------------------------------------------------------------------------------------------
    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """The focal agent's feature after the global graph, nothing masked: (B, hidden)."""
        x, vm, pm = self._inputs(batch)
        return self._encode(x, vm, pm)[0][:, 0]

    def predict(self, batch: dict):
        """Futures (B, modes, T, 2) in metres and mode logits (B, modes)."""
        traj, logits = self.predictor(self.encode(batch))
        return traj * self.config.coord_scale, logits

    def prediction_loss(self, batch: dict) -> torch.Tensor:
        """Fine-tuning: the mode closest to the future (mean displacement) regressed (smooth L1, scaled
        coordinates), its index the target of the mode scores (cross-entropy)."""
        traj, logits = self.predict(batch)
        s = self.config.coord_scale
        fut = batch["future"].float()
        best = (traj - fut[:, None]).norm(dim=-1).mean(-1).argmin(1)
        chosen = traj[torch.arange(len(best)), best]
        return F.smooth_l1_loss(chosen / s, fut / s) + F.cross_entropy(logits, best)

    def feature_dim(self, pool: str | None = None) -> int:
        return self.config.hidden

    def num_layers(self) -> int:
        return self.config.subgraph_depth + self.config.global_depth + 1

    def layer_id(self, name: str) -> int:
        if name.startswith("subgraph.layers."):
            return int(name.split(".")[2])
        if name.startswith("global_graph.layers."):
            return self.config.subgraph_depth + int(name.split(".")[2])
        return self.num_layers()
