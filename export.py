"""Export a trained network for serving, without this project's code.

    python export.py --run runs/gcn --out exported/gcn
    python export.py --checkpoint runs/demo/best.keras --out exported/demo --format litert

The network gets a softmax on top and goes out through Keras' own `model.export`. The
artefact takes a batch of uint8 RGB images (N, H, W, 3) of any size the architecture
allows (H and W multiples of its output stride) and returns class probabilities
(N, H, W, C) float32, a channel per class of the run; `OUT/classes.json` names them
(the run's classes, `common.labels.Classes`). Formats: tf_saved_model (a SavedModel folder, endpoint `serve`),
litert (OUT/model.tflite) and onnx (OUT/model.onnx; needs `pip install tf2onnx onnx`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import sys

from learning import cli

# The file each format writes inside --out (None: the SavedModel is the folder itself).
ARTEFACTS = {"tf_saved_model": None, "litert": "model.tflite", "onnx": "model.onnx"}
# What Keras imports on the TensorFlow backend to convert, as (module, pip package).
# LiteRT needs nothing extra: Keras converts with `tf.lite.TFLiteConverter`, which
# ships with TensorFlow. ONNX goes through tf2onnx, whose Keras patch imports onnx.
CONVERTERS = {"tf_saved_model": (), "litert": (),
              "onnx": (("tf2onnx", "tf2onnx"), ("onnx", "onnx"))}
# Top-level names that mark a folder as an earlier export, which --overwrite may replace.
EXPORT_MARKS = ("saved_model.pb", "model.tflite", "model.onnx")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", default=None, help="run folder written by train.py")
    p.add_argument("--checkpoint", default=None,
                   help="a .keras checkpoint (default: RUN/best.keras)")
    p.add_argument("--out", required=True, help="folder for the exported model")
    p.add_argument("--format", default="tf_saved_model", choices=list(ARTEFACTS),
                   help="artefact format")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it holds an earlier export")
    cli.add_verbose_flag(p)
    return p


def check_converter(fmt: str) -> None:
    """Raises a one-line ValueError naming the pip packages `fmt` still needs."""
    missing = []
    for module, package in CONVERTERS[fmt]:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise ValueError(f"--format {fmt} needs {' and '.join(missing)}, which "
                         f"{'is' if len(missing) == 1 else 'are'} not installed: "
                         f"pip install {' '.join(missing)}")


def check_out(out: str, overwrite: bool) -> None:
    """Refuses an --out that holds files, unless --overwrite and it is an old export.

    The check on what the folder holds keeps `--overwrite` from deleting a folder of
    other work given by mistake (`--out .`, say). What a killed export left beside
    `out` is finished or cleaned up first (`common.files.recover_folder`).
    """
    from common.files import recover_folder
    for line in recover_folder(out) if not os.path.isfile(out) else []:
        print(f"note: {line}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file; give a folder")
    if not os.path.isdir(out) or not os.listdir(out):
        return
    if not overwrite:
        raise ValueError(f"--out {out} already holds files; choose another folder or "
                         f"add --overwrite to replace an earlier export")
    if not any(os.path.exists(os.path.join(out, m)) for m in EXPORT_MARKS):
        raise ValueError(f"--out {out} holds files that are not an export (no "
                         f"{', '.join(EXPORT_MARKS)}); --overwrite only replaces an "
                         f"earlier export. Choose an empty or new folder")


def serving_model(model):
    """`model` (uint8 images -> logits) followed by a softmax: -> probabilities.

    A thin functional wrapper over the same layers and weights, so the artefact
    carries no custom class. The softmax computes in float32 whatever the model's
    dtype policy, so the output dtype is fixed.
    """
    import keras
    probabilities = keras.layers.Softmax(axis=-1, dtype="float32",
                                         name="probabilities")(model.output)
    return keras.Model(model.input, probabilities, name=f"{model.name}_probabilities")


def export(model, out: str, fmt: str, classes=None) -> str:
    """Exports `serving_model(model)` into the folder `out`, with `classes.json`
    naming its output channels when `classes` are given; returns the artefact path.

    It is written to a staging folder beside `out` and swapped in whole
    (`common.files.swap_in_folder`): a failed or killed export leaves `out` as it was,
    or what the next run finishes.
    """
    import keras

    from common.files import staging_folder, swap_in_folder
    from datasets.classes import write_classes
    tmp = staging_folder(out)
    # N, H and W stay free: the exported graph takes any batch and any image size.
    signature = [keras.InputSpec(dtype="uint8", shape=(None, None, None, 3),
                                 name="images")]
    name = ARTEFACTS[fmt]
    try:
        # verbose=False: Keras would print every captured variable of the graph.
        serving_model(model).export(os.path.join(tmp, name) if name else tmp,
                                    format=fmt, input_signature=signature,
                                    verbose=False)
        if classes is not None:
            write_classes(tmp, classes)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in_folder(tmp, out)
    return os.path.join(out, name) if name else out


def flex_ops(path: str) -> list[str]:
    """The TensorFlow ops a `.tflite` file keeps outside LiteRT's builtin set (Flex
    ops, e.g. SegNet's MaxPoolWithArgmax), which a plain LiteRT runtime cannot run:
    read from the op list TensorFlow's model analyzer prints (`Op#1 FlexName(...)`)."""
    import contextlib
    import io
    import re

    import tensorflow as tf
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        tf.lite.experimental.Analyzer.analyze(model_path=path)
    return sorted(set(re.findall(r"Op#\d+ Flex(\w+)\(", report.getvalue())))


def usage(fmt: str, path: str) -> str:
    """A few lines of Python that run the artefact at `path` on `images`."""
    if fmt == "tf_saved_model":
        return (f"import tensorflow as tf\n"
                f"probabilities = tf.saved_model.load({path!r}).serve(images)")
    if fmt == "litert":
        # tf.lite.Interpreter is deprecated; ai_edge_litert.interpreter.Interpreter
        # (pip install ai-edge-litert) is the same API.
        return (f"import tensorflow as tf\n"
                f"it = tf.lite.Interpreter(model_path={path!r})\n"
                f"inp, outp = it.get_input_details()[0], it.get_output_details()[0]\n"
                f"it.resize_tensor_input(inp['index'], images.shape)\n"
                f"it.allocate_tensors(); it.set_tensor(inp['index'], images)\n"
                f"it.invoke(); probabilities = it.get_tensor(outp['index'])")
    return (f"import onnxruntime as ort\n"
            f"session = ort.InferenceSession({path!r})\n"
            f"probabilities = session.run(None, "
            f"{{session.get_inputs()[0].name: images}})[0]")


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    # Both checks come before loading anything, so a wrong call fails at once.
    check_converter(args.format)
    check_out(args.out, args.overwrite)
    from common.labels import PETS
    from learning.runs import checkpoint_path, load_checkpoint
    # TensorFlow logs "Assets written to: <the temporary folder>", which misleads;
    # tf2onnx logs each optimisation pass.
    for logger in ("tensorflow", "tf2onnx"):
        logging.getLogger(logger).setLevel(logging.WARNING)

    ckpt = checkpoint_path(args.run, args.checkpoint)
    net = load_checkpoint(ckpt)
    if net.task != "semantic":
        raise ValueError(f"export.py exports semantic models (a probability map per "
                         f"image); {ckpt} holds {net.architecture}, an {net.task} model")
    classes = cli.run_classes(ckpt, net.num_classes, PETS)
    print(f"exporting {ckpt} ({net.architecture}) as {args.format}")
    path = export(net, args.out, args.format, classes)
    channels = ", ".join(f"{i}={name}" for i, name in enumerate(classes.names))
    print(f"wrote {path}\n"
          f"input: uint8 RGB images (N, H, W, 3), H and W multiples of "
          f"{net.output_stride}\n"
          f"output: float32 probabilities (N, H, W, {net.num_classes}), channel "
          f"{channels} (named in {os.path.join(args.out, 'classes.json')})\n"
          f"use it (no project code needed):\n"
          + "\n".join("    " + line for line in usage(args.format, path).splitlines()))
    flex = flex_ops(path) if args.format == "litert" else []
    if flex:
        print(f"note: {os.path.basename(path)} uses TensorFlow ops outside LiteRT's "
              f"builtins ({', '.join(flex)}); run it with a runtime that has the Flex "
              f"delegate (select TF ops), or export as tf_saved_model or onnx")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
