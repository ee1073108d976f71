"""What train.py, test.py and draw.py share: finding data and runs, and turning the
errors a user can fix into one clear line instead of a traceback."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys

# Quiet TensorFlow's start-up chatter before it is imported anywhere.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def user_errors() -> tuple:
    """Exception types whose message alone tells the user what to fix."""
    from datasets.data import DataError, DatasetError
    from learning.optimizers import TrainingError
    from models.backbones import WeightsError
    from models.checkpoint import CheckpointError
    # OSError: a missing file, a full disk, no permission; its message names the file.
    return (DataError, DatasetError, WeightsError, CheckpointError, TrainingError,
            ValueError, OSError)


def run(main, argv=None) -> int:
    """Runs `main(argv)`; known errors print `error: ...` and exit 2, Ctrl-C exits 130."""
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


def draw_each(paths: list[str], out_dir: str, render, what: str = "overlays") -> int:
    """draw.py's loop: each readable image of `paths` through `render(image) ->
    picture`, saved as `out_dir/NAME.png`; unreadable ones are logged and skipped.
    Returns the number drawn."""
    from tqdm import tqdm

    from datasets.data import DataError, image_name, load_image
    from learning.visualize import save_rgb
    os.makedirs(out_dir, exist_ok=True)
    done = 0
    for path in tqdm(paths, desc="drawing", unit="img"):
        try:
            image = load_image(path)
        except DataError as e:
            logging.warning("skipped %s", e)
            continue
        save_rgb(os.path.join(out_dir, image_name(path) + ".png"), render(image))
        done += 1
    skipped = len(paths) - done
    print(f"{what}: {done} in {out_dir}/" + (f" ({skipped} unreadable skipped)"
                                             if skipped else ""))
    return done


def data_root(arg: str, instances: bool = False) -> str:
    """`demo` -> the built-in demo set (generated on first use; the instance demo,
    `datasets.instances`, for an instance model); else the folder."""
    if arg == "demo" and instances:
        from datasets.instances import ensure_instance_demo
        return ensure_instance_demo()
    if arg == "demo":
        from datasets import demo
        return demo.ensure(demo.DEFAULT_ROOT)
    if not os.path.isdir(arg):
        raise FileNotFoundError(f"data folder not found: {arg} (expected a folder with "
                                f"train/ and test/, or 'demo'; to get the real dataset "
                                f"run: python -m datasets.download --root {arg})")
    return arg


def split_dir(root: str, split: str) -> str:
    """`ROOT/split` when it exists, else ROOT itself if it is a split folder."""
    path = os.path.join(root, split)
    if os.path.isdir(os.path.join(path, "images")):
        return path
    if os.path.isdir(os.path.join(root, "images")):
        return root
    raise FileNotFoundError(f"{path}/images not found: --data must hold {split}/images "
                            f"and {split}/masks")


def checkpoint_path(run_dir: str | None, checkpoint: str | None) -> str:
    """`--checkpoint FILE.keras`, else `RUN/best.keras` (falling back to
    `RUN/last.keras`)."""
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        return checkpoint
    if not run_dir:
        raise ValueError("give --run RUN_DIR or --checkpoint FILE")
    for name in ("best.keras", "last.keras"):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no checkpoint in {run_dir} (expected best.keras or "
                            f"last.keras written by train.py --out {run_dir})")


def read_run_config(run_dir: str | None) -> dict:
    """The `config.json` train.py saved beside its checkpoints ({} if none)."""
    if not run_dir:
        return {}
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def good_paths(data_dir: str, skip_bad: bool,
               with_label: bool = True) -> tuple[list[str], list[str]]:
    """Every usable image of `data_dir`, after decoding each pair once, and the
    problems (one `"FILE: what is wrong"` line each) of the files left out.

    Bad files stop the run with the full list (`DatasetError`) unless `skip_bad`,
    which logs them and goes on with the rest.
    """
    from datasets.data import check_files, list_images, orphan_masks, settle_bad_files
    paths = list_images(data_dir)
    good, problems = check_files(paths, with_label, progress=len(paths) > 200)
    for orphan in orphan_masks(data_dir) if with_label else []:
        logging.warning("%s: mask has no image; ignored", orphan)
    settle_bad_files(data_dir, problems, len(paths), skip_bad)
    if not good:
        raise FileNotFoundError(f"no usable image in {data_dir}")
    return good, [str(p) for p in problems]
