"""Train a segmentation network on a dataset folder (or the built-in demo set).

    python train.py --data data/catdog --out runs/gcn            # the article's recipe
    python train.py --data demo --out runs/demo --image-size 64  # CPU-sized demo
    python train.py --data demo-shapes --out runs/shapes --image-size 64 --weights none

The defaults are the article's hyper-parameters. The classes come from the data: a
`classes.json` in the dataset folder (docs/own-data.md), else the pets'. The run
folder gets `config.json` (every flag, and the classes), `best.keras` and `last.keras` (Keras checkpoints: open them with
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
from learning.precision import CHOICES as PRECISIONS
from learning.precision import DEFAULT as DEFAULT_PRECISION

# Flags that set a constructor argument of some architectures only: flag -> argument.
MODEL_FLAGS = {"--loss": "loss", "--k": "k", "--upsample": "upsample",
               "--output-stride": "output_stride", "--aspp-rates": "aspp_rates",
               "--separable": "separable", "--backbone": "backbone",
               "--deformable-stages": "deformable_stages", "--batch-norm": "batch_norm",
               "--solo-head": "head"}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="data/catdog",
                   help="folder holding train/ (images/ + masks/, and classes.json "
                        "for classes other than the pets'), or 'demo' or "
                        "'demo-shapes'")
    p.add_argument("--out", default="runs/gcn", help="run folder for checkpoints & plots")
    p.add_argument("--model", default="gcn", help="architecture: " + ", ".join(_models()))
    p.add_argument("--image-size", type=cli.positive_int, default=512,
                   help="the side of the square images the network trains on")
    p.add_argument("--resize", default=None, choices=["none", "longer", "shorter"],
                   help="how a photo meets --image-size: none, the article's centre "
                        "crop or pad; longer, scaled whole into the square (padded); "
                        "shorter, scaled to cover it (centre crop). Default: none "
                        "(solo: longer, its only one)")
    p.add_argument("--batch-size", type=cli.positive_int, default=8)
    p.add_argument("--epochs", type=cli.positive_int, default=300,
                   help="total epochs of the run")
    p.add_argument("--lr", type=cli.positive_float, default=1e-3,
                   help="initial learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--patience", type=int, default=10,
                   help="decay the rate after more than this many epochs without gain")
    p.add_argument("--decay", type=float, default=0.1, help="learning-rate decay factor")
    p.add_argument("--eps", type=float, default=1e-8,
                   help="skip a decay that changes the rate by no more than this")
    p.add_argument("--score-threshold", type=float, default=1e-4,
                   help="relative gain a validation score needs to count as better")
    p.add_argument("--evaluator", default=None, choices=["accuracy", "iou"],
                   help="validation score that picks the best checkpoint (default: "
                        "accuracy; solo: mask AP50, always)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="seeded random share of train/ held out for validation")
    p.add_argument("--weights", default="imagenet",
                   help="backbone weights: imagenet, a local weights file, or none")
    p.add_argument("--clipnorm", "--solo-clipnorm", type=float, default=None,
                   help="clip each step's gradient to this global norm (default: 5 for "
                        "solo, no clipping otherwise; 0: off)")
    p.add_argument("--augment", default="flip", choices=["none", "flip", "scale"],
                   help="training augmentation: none; random horizontal flips; or "
                        "flips plus random rescaling (0.5-2x) and a random crop "
                        "(padded where smaller) to --image-size")
    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                   help="Keras mixed-precision policy (logits and loss stay float32); "
                        "auto picks by device (docs/training.md); --resume keeps the "
                        "run's")
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
                   help="load the whole set into RAM (uint8) instead of streaming "
                        "(semantic models)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable/inconsistent files instead of stopping "
                        "(semantic models)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the split, init, batch order and augmentation")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="do not write TensorBoard logs to OUT/tensorboard")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (it stays whole until the new run "
                        "has saved its first checkpoint)")
    arch = p.add_argument_group(
        "architecture options (each applies to the models named; elsewhere it is an "
        "error)")
    arch.add_argument("--loss", default=None, choices=["ce", "dice", "ce+dice"],
                      help="pixel loss of the semantic models (default: ce)")
    arch.add_argument("--k", type=int, default=None,
                      help="gcn: kernel size (default: image-size/32 - 1)")
    arch.add_argument("--upsample", default=None, choices=["transpose", "resize"],
                      help="fcn*: upsampling (default: transpose)")
    arch.add_argument("--output-stride", type=int, default=None, choices=[8, 16],
                      help="deeplabv3plus: output stride (default: 16)")
    arch.add_argument("--aspp-rates", type=int, nargs=3, default=None, metavar="R",
                      help="deeplabv3plus: ASPP dilation rates (default: 6 12 18 at "
                           "output stride 16, doubled at 8; taps past the feature map "
                           "are skipped, so large rates on small images cost nothing)")
    arch.add_argument("--separable", default=None, action=argparse.BooleanOptionalAction,
                      help="deeplabv3plus: atrous separable ASPP convolutions (default: "
                           "on for --backbone xception, the paper's; off otherwise)")
    arch.add_argument("--backbone", "--solo-backbone", dest="backbone", default=None,
                      choices=[*_backbones(), "small"], metavar="NAME",
                      help="gcn, fcn*, deeplabv3plus, solo: the backbone, one of "
                           + ", ".join(_backbones()) + " (--weights apply; default: "
                           "resnet50v2, the article's), or small: solo's CPU demo net "
                           "from random weights")
    arch.add_argument("--deformable-stages", type=int, default=None, metavar="N",
                      help="gcn, fcn*, deeplabv3plus: deformable convolutions (DCNv2) "
                           "in the last N stages of a ResNet backbone (default: 0)")
    arch.add_argument("--batch-norm", default=None, choices=["fused", "keras"],
                      help="gcn, fcn*, deeplabv3plus: batch norm with TensorFlow's fused "
                           "training kernel or Keras' own layer (default: fused)")
    arch.add_argument("--solo-head", default=None, choices=["decoupled", "vanilla"],
                      help="solo: Decoupled SOLO's X/Y mask head or the paper's S^2 "
                           "channels (default: decoupled)")
    cli.add_verbose_flag(p)
    return p


def _models() -> list[str]:
    from models import ARCHITECTURES
    return sorted(ARCHITECTURES)


def _backbones() -> list[str]:
    from models.backbones import BACKBONES
    return list(BACKBONES)


def model_class(args):
    """The class of --model."""
    from models import ARCHITECTURES
    if args.model not in ARCHITECTURES:
        raise ValueError(f"unknown --model {args.model!r}; choose from {_models()}")
    return ARCHITECTURES[args.model]


def build_model(args, num_classes: int):
    """The architecture named by --model with `num_classes` outputs, and the flags
    that apply to it; a flag that does not apply is an error naming it."""
    from models import ARCHITECTURES
    cls = model_class(args)
    accepted = inspect.signature(cls.__init__).parameters
    options = {}
    for flag, name in MODEL_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is None:
            continue
        if name not in accepted:
            takers = [m for m, c in sorted(ARCHITECTURES.items())
                      if name in inspect.signature(c.__init__).parameters]
            raise ValueError(f"{flag} does not apply to --model {args.model} (it "
                             f"applies to {', '.join(takers)})")
        options[name] = value
    weights = None if str(args.weights).lower() == "none" else args.weights
    pretrained = cls.pretrained_backbone and options.get("backbone") != "small"
    if weights is not None and not pretrained:
        print(f"note: {args.model} has no pretrained backbone here; training from random "
              f"weights (--weights {args.weights} ignored)")
        weights = None
    model = cls(num_classes=num_classes, weights=weights, input_size=args.image_size,
                **options)
    model.check_input_size(args.image_size, args.image_size)
    return model


def check_resume(args, classes, default_classes) -> str | None:
    """Refuses data of other classes than the run --resume continues; names the
    flags that differ from that run's; returns the precision policy the run used
    (it keeps it)."""
    from learning.runs import read_run_config
    config = read_run_config(args.out)
    before = config.get("classes", default_classes.to_json())
    if before != classes.to_json():
        raise ValueError(f"--resume: the data's classes ({classes.describe()}) are not "
                         f"those the run in {args.out} learned ({before['names']}); "
                         f"train them into a new --out")
    saved = config.get("args", {})
    ignore = {"resume", "epochs", "weights", "strategy", "cpu_devices", "precision",
              "verbose"}
    changed = {k: (saved[k], v) for k, v in vars(args).items()
               if k in saved and k not in ignore and saved[k] != v}
    if changed:
        print(f"warning: flags differ from the run being resumed: {changed}")
    return config.get("precision")


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from learning import distribute
    if args.cpu_devices:
        distribute.use_cpu_devices(args.cpu_devices)
    strategy = distribute.make_strategy(args.strategy)  # before TF does anything else
    import keras

    from learning import precision
    from learning.optimizers import MomentumOptimizer
    from learning.runs import check_out
    from learning.tasks import TASKS

    print("config:", json.dumps(vars(args), sort_keys=True))
    replicas, chief = strategy.num_replicas_in_sync, distribute.is_chief(strategy)
    if args.batch_size % replicas:
        raise ValueError(f"--batch-size {args.batch_size} is the global batch; it must "
                         f"be a multiple of the {replicas} replicas")
    print(f"replicas: {replicas} ({args.strategy}); batch {args.batch_size} global, "
          f"{args.batch_size // replicas} per replica"
          + ("" if chief else "; this worker writes nothing to --out (the chief does)"))
    task = TASKS[model_class(args).task]
    train_dir = cli.split_dir(cli.data_root(args.data, task), "train", task)
    classes = task.read_classes(train_dir)
    print(f"classes: {classes.describe()}")
    if chief:  # an --out this run may not write fails now, before anything is built
        check_out(args.out, args.resume, args.overwrite)
    recorded = check_resume(args, classes, task.default_classes) if args.resume else None
    args.resize = args.resize or task.default_resize
    if args.resize not in task.resizes:
        raise ValueError(f"--resize {args.resize} does not apply to --model "
                         f"{args.model}: it takes {', '.join(task.resizes)}")
    keras.utils.set_random_seed(args.seed)
    policy = precision.use(recorded or args.precision)
    # Everything that makes variables (model, optimizer, metrics) runs in the
    # strategy's scope; Keras' fit then trains every replica in step.
    with strategy.scope():
        model = build_model(args, classes.num_classes)
        print(f"model: {args.model}, {model.count_params():,} parameters")
        data = task.read_training_data(train_dir, args, model)
        config = {"args": vars(args), "precision": policy,
                  "model": {"architecture": model.architecture, **model.get_config()},
                  "classes": classes.to_json(), **data.info}
        clipnorm = task.clipnorm if args.clipnorm is None else args.clipnorm
        trainer = MomentumOptimizer(
            model, data.train, task.evaluator(args), data.val,
            batch_size=args.batch_size, num_epochs=args.epochs, learning_rate=args.lr,
            momentum=args.momentum, learning_rate_patience=args.patience,
            learning_rate_decay=args.decay, eps=args.eps,
            score_threshold=args.score_threshold, augment=args.augment,
            resize=args.resize,
            seed=args.seed, clipnorm=clipnorm or None,
            tensorboard=not args.no_tensorboard,
            jit_compile={"auto": "auto", "on": True, "off": False}[args.jit])
        with cli.stop_on_signals(trainer):
            history = trainer.train(args.out, resume=args.resume,
                                    overwrite=args.overwrite, config=config)
    if not chief:
        return 0
    print(f"best validation {trainer.evaluator.name}: {history['best_score']:.4f}")
    print(f"checkpoints: {args.out}/best.keras, {args.out}/last.keras")
    print(f"learning curve: {args.out}/learning_curve.png; history: {args.out}/history.csv")
    if not args.no_tensorboard:
        print(f"TensorBoard: tensorboard --logdir {args.out}/tensorboard")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
