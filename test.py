"""Score a trained network on the test split and draw its predictions.

    python test.py --data data/catdog --run runs/gcn
    python test.py --data demo --checkpoint runs/demo/best.keras
    python test.py --data demo --run runs/demo --tta --crf    # sharper, slower

A semantic model prints the article's accuracy next to the honest scores, with a
row per class; an instance model (SOLO) COCO's mask AP. Both write `RUN/metrics.json`
and an overlay per test image (image | truth | prediction) into `RUN/draws/`. The
class names and colours are the run's (its config.json), so no flag names them.
"""

from __future__ import annotations

import argparse
import os
import sys

from learning import cli


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="data/catdog",
                   help="folder holding test/ (images/ + masks/, or images/ + "
                        "annotations.json for solo), or 'demo' or 'demo-shapes'")
    p.add_argument("--run", default=None, help="run folder written by train.py")
    p.add_argument("--checkpoint", default=None,
                   help="a .keras checkpoint (default: RUN/best.keras)")
    p.add_argument("--image-size", type=cli.positive_int, default=None,
                   help="crop/pad size (default: the size the model was trained at)")
    p.add_argument("--batch-size", type=cli.positive_int, default=8)
    p.add_argument("--draws", default=None, help="overlay folder (default: RUN/draws)")
    p.add_argument("--metrics", default=None,
                   help="where the scores go (default: RUN/metrics.json)")
    p.add_argument("--max-draws", type=int, default=None,
                   help="draw at most this many images (default: all)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable/inconsistent files instead of stopping")
    cli.add_refinement_flags(p)
    cli.add_prediction_flags(p)
    cli.add_verbose_flag(p)
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from common.files import write_json
    from learning import precision
    from learning.runs import checkpoint_path, load_checkpoint
    from learning.tasks import TASKS

    ckpt = checkpoint_path(args.run, args.checkpoint)
    run_dir = args.run or os.path.dirname(os.path.abspath(ckpt))
    precision.use(args.precision)
    model = load_checkpoint(ckpt)
    task = TASKS[model.task]
    classes = cli.run_classes(ckpt, model.num_classes, task.default_classes)
    size = args.image_size or model.input_size
    args.resize = args.resize or cli.run_flag(ckpt, "resize", task.default_resize)
    test_dir = cli.split_dir(cli.data_root(args.data, task), "test", task)
    print(f"model: {ckpt} ({model.architecture}; classes {classes.describe()})")
    metrics = task.test(model, test_dir, size, args, run_dir,
                        args.draws or os.path.join(run_dir, "draws"), classes)
    path = args.metrics or os.path.join(run_dir, "metrics.json")
    write_json(path, {**metrics, "checkpoint": ckpt})
    print(f"metrics: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
