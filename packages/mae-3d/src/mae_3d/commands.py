"""The extra ``mae-3d`` command ``segment`` (R-MAE downstream). ``fewshot`` (N-way K-shot on frozen features,
the Point-BERT / Point-MAE protocol) is a mae-core command that every domain has.

``segment`` is a run-based command (``run_flags=True``): it takes every flag of ``probe`` (``--run``, ``--method``,
``--data``, model / data / train fields), resolved by mae-core into a ``RunConfig``, plus its own."""
from __future__ import annotations

import json

from mae_core.errors import ConfigError
from mae_core.registry import CommandSpec, register_command
from mae_core.workflows import prepare_eval


def _model_and_data(r, args):
    from mae_core.train import resolve_device

    train_set, test_set, model = prepare_eval(r, args.run, args.random_init, args.seed)
    args.device = resolve_device(r.train.device)
    return model.to(args.device), train_set, test_set


def segment_arguments(p) -> None:
    g = p.add_argument_group("segmentation")
    g.add_argument("--num-labelled", type=int, default=8, help="labelled training scans used")
    g.add_argument("--seg-epochs", type=int, default=30, help="epochs over the labelled scans")
    g.add_argument("--seg-lr", type=float, default=1e-3, help="learning rate of encoder + head")
    g.add_argument("--seed", type=int, default=0, help="seed")
    g.add_argument("--no-balance", action="store_true", help="plain cross-entropy (default: weighted by "
                                                            "1 / sqrt(class frequency))")
    g.add_argument("--random-init", "--scratch", dest="random_init", action="store_true",
                   help="train the same architecture from scratch instead of the pretrained encoder")


def run_segment(args, r) -> int:
    from mae_core.rundir import RunDir

    from .segment import train_segmentation

    if r.method.name != "r-mae":
        raise ConfigError(f"segment needs an r-mae run, got method {r.method.name!r}")
    model, train_set, test_set = _model_and_data(r, args)
    if not bool((train_set.voxel_labels >= 0).any()):
        raise ConfigError(f"{r.dataset.name}: the training scans have no voxel labels")
    res = train_segmentation(model, train_set, test_set, len(getattr(train_set, "classes", [])) or 5,
                             num_labelled=args.num_labelled, epochs=args.seg_epochs, lr=args.seg_lr, seed=args.seed,
                             device=str(args.device), progress=r.train.progress,
                             balanced=not args.no_balance)
    res["random_init"] = bool(args.random_init)
    print(f"mIoU {res['miou']:.4f} with {res['num_labelled']} labelled scans "
          f"({'scratch' if args.random_init else 'pretrained'})")
    if args.run:
        tag = f"segment_{res['num_labelled']}scans" + ("_scratch" if args.random_init else "")
        RunDir(args.run, create=False).write_summary({tag: res})
    print(json.dumps(res))
    return 0


register_command(CommandSpec(name="segment", domain="3d",
                             help="R-MAE downstream: per-voxel segmentation mIoU with a few labelled scans",
                             add_arguments=segment_arguments, run=run_segment, run_flags=True))
