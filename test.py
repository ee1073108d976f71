"""Score a trained network on the test split and draw its predictions.

    python test.py --data data/catdog --run runs/gcn
    python test.py --data demo --checkpoint runs/demo/best.keras
    python test.py --data demo --run runs/demo --tta --crf    # sharper, slower

Prints the article's accuracy next to the honest scores, writes `RUN/metrics.json` and
an overlay per test image (image | truth | prediction) into `RUN/draws/`.
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
                   help="folder holding test/ (images/ + masks/), or 'demo'")
    p.add_argument("--run", default=None, help="run folder written by train.py")
    p.add_argument("--checkpoint", default=None,
                   help="a .keras checkpoint (default: RUN/best.keras)")
    p.add_argument("--image-size", type=int, default=None,
                   help="crop/pad size (default: the run's training size, else 512)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--draws", default=None, help="overlay folder (default: RUN/draws)")
    p.add_argument("--max-draws", type=int, default=None,
                   help="draw at most this many images (default: all)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable/inconsistent files instead of stopping")
    cli.add_refinement_flags(p)
    return p


def print_table(summary: dict, article: float) -> None:
    print(f"{'metric':<32}{'value':>8}")
    print("-" * 40)
    print(f"{'pixel accuracy (article way)':<32}{article:>8.4f}")
    print(f"{'pixel accuracy (dataset-level)':<32}{summary['pixel_accuracy']:>8.4f}")
    for name, iou in summary["per_class_iou"].items():
        shown = "n/a" if iou is None else f"{iou:.4f}"
        print(f"{'IoU ' + name:<32}{shown:>8}")
    print(f"{'mean IoU':<32}{summary['mean_iou']:>8.4f}")


class Drawer:
    """Writes an image | truth | prediction overlay per image, in stream order.

    The drawing runs in a background thread, so the evaluation does not wait for
    PNG encoding; at most `backlog` batches wait to be drawn. `close()` waits for the
    rest and raises any error the drawing met.
    """

    def __init__(self, names, out_dir, limit=None, backlog: int = 4):
        from concurrent.futures import ThreadPoolExecutor
        os.makedirs(out_dir, exist_ok=True)
        self.names, self.out_dir, self.limit, self.count = names, out_dir, limit, 0
        self.pool, self.pending, self.backlog = ThreadPoolExecutor(1), [], backlog

    def __call__(self, images, labels, pred):
        if len(self.pending) >= self.backlog:
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(self.draw, images, labels, pred))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for job in self.pending:
            job.result()

    def draw(self, images, labels, pred):
        import numpy as np

        from learning.visualize import add_legend, overlay, save_rgb
        for image, label, p in zip(images, labels, pred.astype(np.uint8)):
            if self.limit is not None and self.count >= self.limit:
                return
            panel = np.concatenate([image, overlay(image, label), overlay(image, p)], 1)
            zoom = max(1, 256 // panel.shape[0])  # small crops: enlarge, keep pixels
            panel = panel.repeat(zoom, axis=0).repeat(zoom, axis=1)
            panel = add_legend(panel, title="image | truth | prediction")
            save_rgb(os.path.join(self.out_dir, self.names[self.count] + ".png"), panel)
            self.count += 1


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from learning import instance_scripts
    if instance_scripts.is_instance_checkpoint(args.run, args.checkpoint):  # SOLO
        return instance_scripts.test(args)
    from datasets import data as dataset
    from datasets.stream import make_dataset
    from learning.utils import evaluate, refinement_settings, write_json
    from models.nn import SegNet
    from models.tta import label_predictor, scaled_sizes

    ckpt = cli.checkpoint_path(args.run, args.checkpoint)
    run_dir = args.run or os.path.dirname(os.path.abspath(ckpt))
    saved = cli.read_run_config(run_dir).get("args", {})
    size = args.image_size or saved.get("image_size", 512)
    test_dir = cli.split_dir(cli.data_root(args.data), "test")
    paths, skipped = cli.good_paths(test_dir, args.skip_bad)
    net = SegNet.load(ckpt)
    net.check_input_size(size, size)
    tta, crf = refinement_settings(args)
    predict = label_predictor(net, tta, crf)
    if tta is not None:  # the sizes the scales give here (and a clear error, early)
        tta = {**tta, "sizes": [list(s) for _, s in
                                scaled_sizes(net, size, size, tta["scales"])]}
    print(f"testing {ckpt} on {len(paths)} images of {test_dir} at {size}x{size}"
          + (f" ({len(skipped)} bad file(s) skipped, listed above)" if skipped else "")
          + (f"; TTA at {tta['sizes']}, flipped" if tta else "")
          + ("; dense CRF" if crf else ""))

    draws = args.draws or os.path.join(run_dir, "draws")
    drawer = Drawer([dataset.image_name(p) for p in paths], draws, args.max_draws)
    stream = make_dataset(paths, size, args.batch_size, with_padding=True)
    try:
        cm, article = evaluate(net, stream, progress=True, on_batch=drawer,
                               predict=predict)
    finally:
        drawer.close()
    summary = cm.summary(list(dataset.CLASS_NAMES))
    print_table(summary, article.result)
    metrics = {**summary, "article_pixel_accuracy": article.result,
               "checkpoint": ckpt, "test_dir": test_dir, "num_images": len(paths),
               "image_size": size, "skipped_files": skipped, "tta": tta, "crf": crf}
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    print(f"metrics: {os.path.join(run_dir, 'metrics.json')}")
    print(f"overlays: {drawer.count} in {draws}/")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
