"""Train a segmentation network on a dataset folder (or the built-in demo set).

    python train.py --data data/catdog --out runs/gcn            # the article's recipe
    python train.py --data demo --out runs/demo --image-size 64  # CPU-sized demo

The defaults are the article's hyper-parameters. The run folder gets `config.json`
(every flag), `best.keras` and `last.keras` (Keras checkpoints: open them with
`keras.models.load_model` after `import models`), `state.json`, `history.csv`,
`learning_curve.png` and `tensorboard/`. Ctrl-C saves a resumable state; `--resume`
continues exactly.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys

from learning import cli
from learning.distribute import STRATEGIES


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="data/catdog",
                   help="folder holding train/ (images/ + masks/), or 'demo'")
    p.add_argument("--out", default="runs/gcn", help="run folder for checkpoints & plots")
    p.add_argument("--model", default="gcn", help="architecture: " + ", ".join(_models()))
    p.add_argument("--image-size", type=int, default=512,
                   help="images are centre-cropped/padded to this square size")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=300, help="total epochs of the run")
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--patience", type=int, default=10,
                   help="decay the rate after more than this many epochs without gain")
    p.add_argument("--decay", type=float, default=0.1, help="learning-rate decay factor")
    p.add_argument("--eps", type=float, default=1e-8,
                   help="skip a decay that changes the rate by no more than this")
    p.add_argument("--score-threshold", type=float, default=1e-4,
                   help="relative gain a validation score needs to count as better")
    p.add_argument("--evaluator", default="accuracy", choices=["accuracy", "iou"],
                   help="validation score that picks the best checkpoint")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="seeded random share of train/ held out for validation")
    p.add_argument("--weights", default="imagenet",
                   help="backbone weights: imagenet, a local weights file, or none")
    p.add_argument("--loss", default="ce", help="ce, dice or ce+dice")
    p.add_argument("--k", type=int, default=None,
                   help="GCN kernel size (default: image-size/32 - 1)")
    p.add_argument("--upsample", default=None, choices=["transpose", "resize"],
                   help="FCN upsampling (default: transpose)")
    p.add_argument("--output-stride", type=int, default=None, choices=[8, 16],
                   help="DeepLab v3+ output stride (default: 16)")
    p.add_argument("--aspp-rates", type=int, nargs=3, default=None, metavar="R",
                   help="DeepLab v3+ ASPP dilation rates (default: 6 12 18 at output "
                        "stride 16, doubled at 8; taps past the feature map are skipped,"
                        " so large rates on small images cost nothing extra)")
    p.add_argument("--augment", default="flip", choices=["none", "flip", "scale"],
                   help="training augmentation: none; random horizontal flips; or "
                        "flips plus random rescaling (0.5-2x) and a random crop "
                        "(padded where smaller) to --image-size")
    p.add_argument("--precision", default="float32",
                   choices=["float32", "mixed_float16", "mixed_bfloat16"],
                   help="Keras mixed-precision policy (logits and loss stay float32); "
                        "float32 is fastest on a CPU, mixed_float16 on most GPUs")
    p.add_argument("--jit", default="auto", choices=["auto", "on", "off"],
                   help="XLA compilation of the training step (auto: Keras decides; "
                        "it is off on a CPU)")
    p.add_argument("--strategy", default="default", choices=list(STRATEGIES),
                   help="tf.distribute strategy: one device; mirrored (every GPU here, "
                        "else every logical CPU device); multiworker (the machines in "
                        "TF_CONFIG). --batch-size is the global batch")
    p.add_argument("--cpu-devices", type=int, default=None, metavar="N",
                   help="split the CPU into N logical devices (to try --strategy "
                        "mirrored on a machine without a GPU)")
    p.add_argument("--in-memory", action="store_true",
                   help="load the whole set into RAM (uint8) instead of streaming")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable/inconsistent files instead of stopping")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the split, init, batch order and augmentation")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="do not write TensorBoard logs to OUT/tensorboard")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    solo = p.add_argument_group(
        "SOLO instance segmentation (--model solo)",
        "--data holds train/images + train/annotations.json (COCO), or is 'demo' (the "
        "instance demo); the validation score is COCO mask AP50; --loss, --evaluator "
        "and --in-memory do not apply")
    solo.add_argument("--solo-backbone", default="resnet50v2",
                      choices=["resnet50v2", "small"],
                      help="ResNet-50 v2 (--weights apply) or a small conv net from "
                           "random weights (the CPU demo's)")
    solo.add_argument("--solo-head", default="decoupled", choices=["decoupled", "vanilla"],
                      help="Decoupled SOLO's X/Y mask head or the paper's S^2 channels")
    solo.add_argument("--solo-clipnorm", type=float, default=5.0,
                      help="clip each step's gradient to this global norm (0: off)")
    return p


def _strategy(args):
    """The `tf.distribute` strategy of --strategy (after --cpu-devices)."""
    from learning import distribute
    if args.cpu_devices:
        distribute.use_cpu_devices(args.cpu_devices)
    return distribute.make_strategy(args.strategy)


def _models() -> list[str]:
    from models import ARCHITECTURES
    return sorted(ARCHITECTURES)


def build_net(args):
    """The architecture named by --model, with the flags that apply to it."""
    from models import ARCHITECTURES
    if args.model not in ARCHITECTURES:
        raise ValueError(f"unknown --model {args.model!r}; choose from {_models()}")
    cls = ARCHITECTURES[args.model]
    if args.model == "solo":  # no pixel loss; its own flags
        from learning.instance_scripts import build_solo
        return build_solo(args)
    weights = None if str(args.weights).lower() == "none" else args.weights
    if weights is not None and not getattr(cls, "pretrained_backbone", True):
        print(f"note: {args.model} has no pretrained backbone; training from random "
              f"weights (--weights {args.weights} ignored)")
        weights = None
    wanted = {"input_size": args.image_size, "k": args.k, "upsample": args.upsample,
              "output_stride": args.output_stride, "aspp_rates": args.aspp_rates}
    accepted = inspect.signature(cls.__init__).parameters
    options = {k: v for k, v in wanted.items() if v is not None and k in accepted}
    net = cls(weights=weights, loss=args.loss, **options)
    net.check_input_size(args.image_size, args.image_size)
    return net


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    strategy = _strategy(args)  # before TensorFlow does anything else (its rule)
    if args.model == "solo":  # instances: own data, score (mask AP), same trainer
        from learning import instance_scripts
        return instance_scripts.train(args, strategy)
    import keras

    from datasets import data as dataset
    from datasets.stream import split_paths
    from learning import distribute
    from learning.evaluators import EVALUATORS
    from learning.optimizers import MomentumOptimizer

    print("config:", json.dumps(vars(args), sort_keys=True))
    replicas, chief = strategy.num_replicas_in_sync, distribute.is_chief(strategy)
    if args.batch_size % replicas:
        raise ValueError(f"--batch-size {args.batch_size} is the global batch; it must "
                         f"be a multiple of the {replicas} replicas")
    print(f"replicas: {replicas} ({args.strategy}); batch {args.batch_size} global, "
          f"{args.batch_size // replicas} per replica"
          + ("" if chief else "; this worker writes nothing to --out (the chief does)"))
    keras.utils.set_random_seed(args.seed)
    root = cli.data_root(args.data)
    train_dir = cli.split_dir(root, "train")
    paths, skipped = cli.good_paths(train_dir, args.skip_bad)
    train_paths, val_paths = split_paths(paths, args.val_fraction, args.seed)
    print(f"data: {len(train_paths)} training and {len(val_paths)} validation images "
          f"from {train_dir}" + (f"; {len(skipped)} bad file(s) skipped (listed above, "
                                 f"and in {args.out}/config.json)" if skipped else ""))
    if args.resume and not os.path.isfile(os.path.join(args.out, "last.keras")):
        raise FileNotFoundError(f"--resume: no {args.out}/last.keras to continue from")
    if args.resume:
        saved = cli.read_run_config(args.out).get("args", {})
        if "no_augment" in saved:  # a run from before --augment
            saved["augment"] = "none" if saved.pop("no_augment") else "flip"
        ignore = {"resume", "epochs", "weights", "strategy", "cpu_devices"}
        changed = {k: (saved[k], v) for k, v in vars(args).items()
                   if k in saved and k not in ignore and saved[k] != v}
        if changed:
            print(f"warning: flags differ from the run being resumed: {changed}")
    keras.mixed_precision.set_global_policy(args.precision)
    # Everything that makes variables (model, optimizer, metrics) runs in the
    # strategy's scope; Keras' fit then trains every replica in step.
    with strategy.scope():
        net = build_net(args)
        print(f"model: {args.model}, {net.model.count_params():,} parameters")
        train_set, val_set = train_paths, val_paths or None
        if args.in_memory:
            train_set = _in_memory(train_paths, args.image_size, dataset)
            val_set = _in_memory(val_paths, args.image_size, dataset) if val_paths else None
        if chief:
            os.makedirs(args.out, exist_ok=True)
        if chief and not args.resume:
            from learning.utils import write_json
            write_json(os.path.join(args.out, "config.json"),
                       {"args": vars(args), "model": net.config,
                        "train_images": len(train_paths), "val_images": len(val_paths),
                       "val_names": [dataset.image_name(p) for p in val_paths],
                       "skipped_files": skipped})
        optimizer = MomentumOptimizer(
            net, train_set, EVALUATORS[args.evaluator](), val_set,
            batch_size=args.batch_size, num_epochs=args.epochs, learning_rate=args.lr,
            momentum=args.momentum, learning_rate_patience=args.patience,
            learning_rate_decay=args.decay, eps=args.eps, image_size=args.image_size,
            score_threshold=args.score_threshold, augment=args.augment,
            seed=args.seed, tensorboard=not args.no_tensorboard,
            jit_compile={"auto": "auto", "on": True, "off": False}[args.jit])
        with cli.stop_on_signals(optimizer):
            history = optimizer.train(args.out, resume=args.resume)
    if not chief:
        return 0
    print(f"best validation {args.evaluator}: {history['best_score']:.4f}")
    print(f"checkpoints: {args.out}/best.keras, {args.out}/last.keras")
    print(f"learning curve: {args.out}/learning_curve.png; history: {args.out}/history.csv")
    if not args.no_tensorboard:
        print(f"TensorBoard: tensorboard --logdir {args.out}/tensorboard")
    return 0


def _in_memory(paths, image_size, dataset):
    """A `DataSet` of the given files (uint8 arrays; ~1 MB per 512x512 pair)."""
    import numpy as np
    examples = [dataset.load_example(p, image_size) for p in paths]
    return dataset.DataSet(np.stack([e.image for e in examples]),
                           np.stack([e.label for e in examples]),
                           names=[dataset.image_name(p) for p in paths])


if __name__ == "__main__":
    sys.exit(cli.run(main))
