"""Draw a trained network's predictions on a folder of unlabelled images.

    python draw.py --images my_photos/ --run runs/gcn --out my_photos_drawn/
    python draw.py --images my_photos/ --run runs/gcn --out drawn/ --tta --crf

Every .jpg/.jpeg/.png in --images (or in --images/images) gets an overlay at its
original size: class colours blended onto the photo, with a legend.
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
    p.add_argument("--max-side", type=int, default=1024,
                   help="larger images are predicted at this longest side, then the "
                        "labels are scaled back (nearest) to the original size")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    cli.add_refinement_flags(p)
    return p


def image_paths(folder: str) -> list[str]:
    """The images of `folder` (or `folder/images`), sorted."""
    from datasets.data import list_image_files
    images = os.path.join(folder, "images")
    return list_image_files(images if os.path.isdir(images) else folder)


def predict_full_size(net, image, max_side: int, predict=None):
    """Labels (H, W) for an image of any size: shrink if needed, pad to the network's
    stride, predict (`predict(images) -> labels`, default `net.predict_labels`), then
    undo both."""
    import cv2
    import numpy as np
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    x = image if scale == 1.0 else cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))),
        interpolation=cv2.INTER_AREA)
    s = net.output_stride
    sh, sw = x.shape[:2]
    ph, pw = -sh % s, -sw % s
    x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(sh, sw) > s else "edge")
    label = (predict or net.predict_labels)(x[None])[0, :sh, :sw]
    if scale != 1.0:
        label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    return label


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from learning.utils import refinement_settings
    from learning.visualize import add_legend, overlay
    from models.nn import SegNet
    from models.tta import label_predictor

    paths = image_paths(args.images)
    from learning import instance_scripts
    if instance_scripts.is_instance_checkpoint(args.run, args.checkpoint):  # SOLO
        return instance_scripts.draw(args, paths)
    net = SegNet.load(cli.checkpoint_path(args.run, args.checkpoint))
    predict = label_predictor(net, *refinement_settings(args))

    def render(image):
        label = predict_full_size(net, image, args.max_side, predict)
        return add_legend(overlay(image, label, args.alpha))
    cli.draw_each(paths, args.out, render)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
