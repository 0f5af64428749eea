"""Extra ``mae-3d`` commands: ``fewshot`` (N-way K-shot on frozen features) and ``segment`` (R-MAE downstream).

Both are run-based commands (``run_flags=True``): they take every flag of ``probe`` (``--run``, ``--method``,
``--data``, model / data / train fields), resolved by mae-core into a ``RunConfig``, plus their own."""
from __future__ import annotations

import json
import time

from mae_core.errors import ConfigError
from mae_core.eval.probes import cached_features
from mae_core.registry import CommandSpec, register_command
from mae_core.workflows import prepare_eval


def _model_and_data(r, args):
    from mae_core.train import resolve_device

    train_set, test_set, model = prepare_eval(r, args.run, args.random_init, args.seed)
    args.device = resolve_device(r.train.device)
    return model.to(args.device), train_set, test_set


def fewshot_arguments(p) -> None:
    g = p.add_argument_group("few-shot")
    g.add_argument("--way", type=int, default=5, help="classes per episode (N)")
    g.add_argument("--shot", type=int, default=10, help="labelled support samples per class (K)")
    g.add_argument("--query", type=int, default=20, help="query samples per class (from the test split)")
    g.add_argument("--folds", type=int, default=10, help="random episodes averaged")
    g.add_argument("--svm-c", type=float, default=1.0, help="C of the linear SVM")
    g.add_argument("--seed", type=int, default=0, help="seed of the episodes")
    g.add_argument("--probe-batch-size", type=int, default=128, help="batch size for feature extraction")
    g.add_argument("--random-init", action="store_true", help="evaluate a randomly initialised encoder instead")


def run_fewshot(args, r) -> int:
    from mae_core.eval.svm import few_shot
    from mae_core.rundir import RunDir

    model, train_set, test_set = _model_and_data(r, args)
    t0 = time.time()
    cache: dict = {}
    xtr, ytr = cached_features(model, train_set, cache, "train", args.device, args.probe_batch_size)
    xte, yte = cached_features(model, test_set, cache, "test", args.device, args.probe_batch_size)
    try:
        res = few_shot(xtr, ytr, way=args.way, shot=args.shot, query=args.query, folds=args.folds, seed=args.seed,
                       c=args.svm_c, test_features=xte, test_labels=yte)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    res["time_s"] = round(time.time() - t0, 2)
    res["random_init"] = bool(args.random_init)
    print(f"{args.way}-way {args.shot}-shot: {res['acc']:.2f} +- {res['std']:.2f} % over {args.folds} folds "
          f"(chance {100 / args.way:.1f} %)")
    if args.run:
        tag = f"fewshot_{args.way}way_{args.shot}shot" + ("_random_init" if args.random_init else "")
        RunDir(args.run, create=False).write_summary({tag: res})
    print(json.dumps(res))
    return 0


register_command(CommandSpec(name="fewshot", domain="3d",
                             help="N-way K-shot accuracy on frozen features over repeated folds (Point-BERT / "
                                  "Point-MAE protocol, with a linear SVM on the frozen encoder instead of fine-tuning)",
                             add_arguments=fewshot_arguments, run=run_fewshot, run_flags=True))


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
