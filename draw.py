"""Draw a trained network's predictions on a folder of unlabelled images.

    python draw.py --images my_photos/ --run runs/gcn --out my_photos_drawn/
    python draw.py --images my_photos/ --run runs/gcn --out drawn/ --tta --crf

Every .jpg/.jpeg/.png in --images (or in --images/images) gets a picture at its
original size: class colours blended onto the photo, with a legend (or, for an
instance model, each object outlined in its own colour with its class and score).
The class names and colours are those the run recorded in its config.json.
"""

from __future__ import annotations

import argparse
import os
import sys

from learning import cli


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", required=True, help="folder of images to draw")
    p.add_argument("--run", default=None, help="run folder written by train.py")
    p.add_argument("--checkpoint", default=None,
                   help="a .keras checkpoint (default: RUN/best.keras)")
    p.add_argument("--out", required=True, help="folder for the overlays")
    p.add_argument("--max-side", type=cli.positive_int, default=1024,
                   help="larger images are predicted at this longest side, then the "
                        "labels are scaled back (nearest) to the original size")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    cli.add_refinement_flags(p)
    cli.add_prediction_flags(p)
    cli.add_verbose_flag(p)
    return p


def image_paths(folder: str) -> list[str]:
    """The images of `folder` (or `folder/images`), sorted."""
    from datasets.files import list_image_files
    images = os.path.join(folder, "images")
    return list_image_files(images if os.path.isdir(images) else folder)


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from learning import precision
    from learning.runs import checkpoint_path, load_checkpoint
    from learning.tasks import TASKS

    paths = image_paths(args.images)
    precision.use(args.precision)
    ckpt = checkpoint_path(args.run, args.checkpoint)
    model = load_checkpoint(ckpt)
    task = TASKS[model.task]
    args.resize = args.resize or cli.run_flag(ckpt, "resize", task.default_resize)
    render = task.renderer(model, args,
                           cli.run_classes(ckpt, model.num_classes, task.default_classes))
    cli.draw_each(paths, args.out, render)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
