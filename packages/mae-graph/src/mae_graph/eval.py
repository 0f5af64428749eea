"""The GraphMAE evaluation protocols, registered as probes of the mae-core CLI.

* ``logreg`` (node classification): embed the whole unmasked graph with the frozen encoder, train a logistic
  regression layer (``nn.Linear``, Adam with ``lr_f`` / ``weight_decay_f``, ``max_epoch_f`` full-batch epochs) on
  the train nodes, keep the epoch with the best validation accuracy and report its test accuracy; mean +- std over
  ``seeds`` probe seeds on the one encoder (``std_over`` says so; the paper's +- is over pretraining seeds, each
  probed once: ``mae-graph seeds``, :mod:`mae_graph.protocol`). The hyper-parameters come from the model config (the presets carry the paper's values).
* ``svm-cv`` (graph classification): pooled graph embeddings, 10-fold stratified SVM with C in
  {1e-3, ..., 10} (:func:`mae_core.eval.svm_cv.svm_cv`).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.eval.probes import cached_features, register_probe
from mae_core.eval.svm_cv import svm_cv


@torch.no_grad()
def embed_graph(model, data) -> torch.Tensor:
    model.eval()
    dev = next(model.parameters()).device
    return model.embed({"graph": data.to(dev)}).float().cpu()


def logreg_node_probe(x: torch.Tensor, y: torch.Tensor, train_mask, val_mask, test_mask, lr: float = 0.01,
                      weight_decay: float = 1e-4, epochs: int = 300, seed: int = 0) -> dict:
    """GraphMAE's ``linear_probing_for_transductive_node_classiifcation``; returns final and best-val test acc."""
    num_classes = int(y.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    best_val, best_state, test_acc = -1.0, None, 0.0
    for _ in range(epochs):
        clf.train()
        loss = F.cross_entropy(clf(x[train_mask]), y[train_mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            pred = clf(x).argmax(1)
            val_acc = float((pred[val_mask] == y[val_mask]).float().mean())
            test_acc = float((pred[test_mask] == y[test_mask]).float().mean())
        if val_acc >= best_val:
            best_val, best_state = val_acc, copy.deepcopy(clf.state_dict())
    clf.load_state_dict(best_state)
    with torch.no_grad():
        estp = float((clf(x).argmax(1)[test_mask] == y[test_mask]).float().mean())
    return {"acc": estp, "final_acc": test_acc, "best_val_acc": best_val}


def logreg_node_probe_seeds(x: torch.Tensor, y: torch.Tensor, train_mask, val_mask, test_mask, lr: float = 0.01,
                            weight_decay: float = 1e-4, epochs: int = 300, seeds=range(20)) -> list[dict]:
    """:func:`logreg_node_probe` for every seed at once: the classifiers are stacked into one (S, D, K) weight and
    trained together (the summed loss gives every classifier its own gradient and Adam is element-wise, so each
    seed follows the same trajectory as alone, up to float rounding). One loop instead of S."""
    seeds = list(seeds)
    num_classes = int(y.max()) + 1
    ws, bs = [], []
    for s in seeds:  # the same initial weights as the single-seed probe
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            clf = nn.Linear(x.shape[1], num_classes)
        ws.append(clf.weight.detach().t())
        bs.append(clf.bias.detach())
    w = nn.Parameter(torch.stack(ws))  # (S, D, K)
    b = nn.Parameter(torch.stack(bs))  # (S, K)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    xs = x.unsqueeze(0).expand(len(seeds), -1, -1)
    x_tr, y_tr = x[train_mask].unsqueeze(0).expand(len(seeds), -1, -1), y[train_mask]
    n_seeds = len(seeds)
    best_val = torch.full((n_seeds,), -1.0)
    best_test = torch.zeros(n_seeds)
    test_acc = torch.zeros(n_seeds)
    for _ in range(epochs):
        logits = torch.baddbmm(b.unsqueeze(1), x_tr, w)  # (S, n_train, K)
        loss = F.cross_entropy(logits.reshape(-1, num_classes), y_tr.repeat(n_seeds), reduction="none")
        loss = loss.view(n_seeds, -1).mean(1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            pred = torch.baddbmm(b.unsqueeze(1), xs, w).argmax(-1)  # (S, N)
            correct = (pred == y).float()
            val_acc = correct[:, val_mask].mean(1)
            test_acc = correct[:, test_mask].mean(1)
            better = val_acc >= best_val
            best_val = torch.where(better, val_acc, best_val)
            best_test = torch.where(better, test_acc, best_test)
    return [{"acc": float(best_test[i]), "final_acc": float(test_acc[i]), "best_val_acc": float(best_val[i])}
            for i in range(n_seeds)]


def node_protocol(model, data, seeds=range(20), lr=None, weight_decay=None, epochs=None) -> dict:
    """Frozen embeddings + the logistic-regression probe over ``seeds`` (all at once,
    :func:`logreg_node_probe_seeds`): mean / std of the best-val test accuracy."""
    cfg = model.config
    lr = getattr(cfg, "lr_f", 0.01) if lr is None else lr
    weight_decay = getattr(cfg, "weight_decay_f", 1e-4) if weight_decay is None else weight_decay
    epochs = getattr(cfg, "max_epoch_f", 300) if epochs is None else epochs
    x = embed_graph(model, data)
    y = data.y.cpu()
    runs = logreg_node_probe_seeds(x, y, data.train_mask.cpu(), data.val_mask.cpu(), data.test_mask.cpu(), lr,
                                   weight_decay, epochs, seeds=seeds)
    accs = np.array([r["acc"] for r in runs])
    finals = np.array([r["final_acc"] for r in runs])
    return {"acc": float(accs.mean()), "std": float(accs.std()), "final_acc": float(finals.mean()),
            "final_std": float(finals.std()), "seeds": len(runs), "lr_f": lr, "weight_decay_f": weight_decay,
            "max_epoch_f": epochs, "per_seed": [float(a) for a in accs],
            "std_over": "probe seeds on one pretrained encoder"}


def _graph_of(ds):
    base = getattr(ds, "dataset", ds)  # a Subset keeps the dataset underneath
    data = getattr(base, "data", None)
    if data is None or not hasattr(data, "train_mask"):
        return None
    return data


def _probe_logreg(model, train_set, test_set, args, cache):
    data = _graph_of(train_set)
    if data is None:
        return {}  # graph-level data: use svm-cv / linear / knn
    n = getattr(getattr(model, "config", None), "probe_seeds", 20)
    res = node_protocol(model, data, seeds=range(args.probe_seed, args.probe_seed + n))
    print(f"logreg: {100 * res['acc']:.2f} +- {100 * res['std']:.2f} % over {n} probe seeds on one pretrained "
          "encoder (the paper's +- is over pretraining seeds: mae-graph seeds)")
    return res


def _probe_svm(model, train_set, test_set, args, cache):
    if _graph_of(train_set) is not None:
        return {}  # node-level data: use logreg
    x, y = cached_features(model, train_set, cache, "train", args.device, args.probe_batch_size)
    return svm_cv(x, y, folds=10, seed=args.probe_seed)


register_probe("logreg", _probe_logreg)
register_probe("svm-cv", _probe_svm)
