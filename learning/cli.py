"""What train.py, test.py, draw.py and export.py share: finding data, stopping on a
signal, the draw loop, and turning the errors a user can fix into one clear line
instead of a traceback."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def positive_int(text: str) -> int:
    """argparse type: an integer above zero (argparse names the flag if not)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number above zero (a learning rate, a clip norm)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def user_errors() -> tuple:
    """Exception types whose message alone tells the user what to fix."""
    from datasets.files import DataError, DatasetError
    from learning.optimizers import TrainingError
    from learning.runs import CheckpointError
    from models.backbones import WeightsError
    # OSError: a missing file, a full disk, no permission; its message names the file.
    return (DataError, DatasetError, WeightsError, CheckpointError, TrainingError,
            ValueError, OSError)


def add_verbose_flag(p) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="show everything TensorFlow prints, and Keras' progress bar "
                        "even in a log file")


def run(main, argv=None) -> int:
    """Runs `main(argv)` with TensorFlow's start-up kept quiet (`learning.console`,
    unless --verbose); known errors print `error: ...` and exit 2, Ctrl-C exits 130."""
    from learning import console
    console.quiet_start("--verbose" in (sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    # tf.distribute logs every all-reduce it builds at INFO; keep its warnings only.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    from learning.optimizers import TrainingInterrupted
    try:
        return main(argv) or 0
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001
        import tensorflow as tf
        if isinstance(e, tf.errors.OpError):  # e.g. a file that broke mid-stream
            print(f"error: {e.message.splitlines()[0]}", file=sys.stderr)
            return EXIT_USAGE
        raise


@contextlib.contextmanager
def stop_on_signals(trainer):
    """Ctrl-C and SIGTERM ask `trainer` to stop after the step under way (it then saves
    a resumable state); a second Ctrl-C aborts at once. The previous handlers come
    back on exit."""
    def request_stop(signum, frame):
        if trainer.stop_requested:  # a second Ctrl-C: the user really means it
            raise KeyboardInterrupt
        trainer.request_stop()
        print(f"\n{signal.Signals(signum).name} received: finishing this step and "
              f"saving a resumable state (press Ctrl-C again to abort at once)",
              flush=True)
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield trainer
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_refinement_flags(p) -> None:
    """test.py's and draw.py's `--tta`, `--tta-scales` and `--crf`."""
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the class probabilities over "
                        "--tta-scales and horizontal flips (DeepLab's multi-scale test)")
    p.add_argument("--tta-scales", type=float, nargs="+", default=None, metavar="S",
                   help="image scales of --tta, sizes rounded to the stride (default: "
                        "0.75 1.0 1.25; needs --tta)")
    p.add_argument("--crf", action="store_true",
                   help="refine the probabilities with a dense CRF (models/crf.py, "
                        "DeepLab v1/v2's post-processing) before the arg-max")


def add_prediction_flags(p) -> None:
    """test.py's and draw.py's `--resize` (default: the run's) and `--precision`."""
    from datasets.geometry import RESIZES
    from learning.precision import CHOICES, DEFAULT
    p.add_argument("--resize", default=None, choices=RESIZES,
                   help="how a photo meets the model's input size (default: the run's, "
                        "from its config.json)")
    p.add_argument("--precision", default=DEFAULT, choices=CHOICES,
                   help="Keras mixed-precision policy to predict with (auto: by device)")


def draw_each(paths: list[str], out_dir: str, render) -> int:
    """draw.py's loop: each readable image of `paths` through `render(image) ->
    picture`, saved as `out_dir/NAME.png` (`NAME.EXT.png` where two images share a
    name, `a.jpg` and `a.png`); unreadable ones are logged and skipped. Returns the
    number drawn."""
    from tqdm import tqdm

    from datasets.data import same_name_images
    from datasets.files import DataError, image_name, load_image
    from learning.visualize import save_rgb
    os.makedirs(out_dir, exist_ok=True)
    shared = same_name_images(paths)
    done = 0
    for path in tqdm(paths, desc="drawing", unit="img"):
        try:
            image = load_image(path)
        except DataError as e:
            logging.warning("skipped %s", e)
            continue
        name = os.path.basename(path) if path in shared else image_name(path)
        save_rgb(os.path.join(out_dir, name + ".png"), render(image))
        done += 1
    skipped = len(paths) - done
    print(f"drawn: {done} in {out_dir}/" + (f" ({skipped} unreadable skipped)"
                                             if skipped else ""))
    return done


def data_root(arg: str, task) -> str:
    """`demo` (or `demo-shapes`, five classes of shapes) -> the task's built-in demo
    set (made on first use); else the folder."""
    if arg in DEMOS:
        return task.demo_root(arg)
    if not os.path.isdir(arg):
        raise FileNotFoundError(f"data folder not found: {arg} (expected a folder with "
                                f"train/ and test/, or one of {', '.join(DEMOS)}; to get "
                                f"the real dataset run: python -m datasets.download "
                                f"--root {arg})")
    return arg


DEMOS = ("demo", "demo-shapes")  # the names --data takes for a built-in set


def run_classes(checkpoint: str, num_classes: int, default):
    """The classes (`common.labels.Classes`) a checkpoint's `num_classes` outputs
    stand for: those its run recorded in the config.json beside it; for a run that
    recorded none (one from before class sets, a bare .keras file) `default` when it
    has as many classes (the pets), else `class_0`, `class_1`, ..."""
    from common.labels import Classes
    from learning.runs import CheckpointError, read_run_config
    run_dir = os.path.dirname(os.path.abspath(checkpoint))
    config = read_run_config(run_dir)
    if "classes" in config:
        try:
            recorded = Classes.from_json(config["classes"])
        except ValueError as e:
            raise CheckpointError(f"{os.path.join(run_dir, 'config.json')}: its classes "
                                  f"cannot be read ({e})") from None
        if recorded.num_classes == num_classes:
            return recorded
        logging.warning("%s beside %s names %d classes but the model has %d outputs: "
                        "it is another model's run, so its class names are not used",
                        "config.json", checkpoint, recorded.num_classes, num_classes)
    if default.num_classes == num_classes:
        return default
    return Classes.generic(num_classes)


def run_flag(checkpoint: str, flag: str, default):
    """A flag of the run that wrote `checkpoint`, from its config.json (`default` for
    a run that recorded none)."""
    from learning.runs import read_run_config
    args = read_run_config(os.path.dirname(os.path.abspath(checkpoint))).get("args", {})
    return args.get(flag) or default


def split_dir(root: str, split: str, task) -> str:
    """`ROOT/split` when it exists, else ROOT itself if it is a split folder; the
    error names what the task's folders hold (`task.layout`)."""
    path = os.path.join(root, split)
    if os.path.isdir(os.path.join(path, "images")):
        return path
    if os.path.isdir(os.path.join(root, "images")):
        return root
    needs = " and ".join(f"{split}/{part}" for part in task.layout)
    raise FileNotFoundError(f"{path}/images not found: --data must hold {needs}")
