"""export.py: an untrained network goes out as a SavedModel (and a LiteRT file) that a
fresh Python, with no access to this project, runs at any allowed image size and
gets the same probabilities as `softmax(model(x))`; wrong calls fail with one line."""

import contextlib
import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import models
from learning import cli, runs
from scripts import script


# Small builds of two architectures: the fast U-Net and the article's GCN.
NETS = {"unet": dict(base_filters=8, depth=2), "gcn": dict(input_size=64)}
# What the serving tests export: (case, architecture, --format).
CASES = [("unet-saved_model", "unet", "tf_saved_model"),
         ("gcn-saved_model", "gcn", "tf_saved_model"),
         ("unet-litert", "unet", "litert")]

# Runs in a child process whose cwd and PYTHONPATH do not reach the repository, so the
# artefacts must serve on TensorFlow alone. One child serves every case, since
# TensorFlow alone takes seconds to import. argv: manifest.json, out.npz.
CHILD = """
import importlib.util, json, sys
import numpy as np, tensorflow as tf
assert importlib.util.find_spec("models") is None, "the project is importable"
manifest, results = json.load(open(sys.argv[1])), {}
for case, fmt, artefact, inputs in manifest:
    inputs = np.load(inputs)
    if fmt == "tf_saved_model":
        loaded = tf.saved_model.load(artefact)
        sig = loaded.signatures["serving_default"].structured_input_signature[1]
        spec = sig["images"]
        results[case + "__shape"] = [-1 if d is None else d for d in spec.shape]
        results[case + "__dtype"] = spec.dtype.name
        for name in inputs.files:
            results[case + "__" + name] = loaded.serve(inputs[name]).numpy()
        continue
    for name in inputs.files:
        it = tf.lite.Interpreter(model_path=artefact)
        inp, outp = it.get_input_details()[0], it.get_output_details()[0]
        it.resize_tensor_input(inp["index"], inputs[name].shape)
        it.allocate_tensors()
        it.set_tensor(inp["index"], inputs[name])
        it.invoke()
        results[case + "__" + name] = it.get_tensor(outp["index"])
np.savez(sys.argv[2], **results)
"""


export = script("export")


def make_run(run_dir, name="unet"):
    """A run folder holding an untrained `name` network as best.keras."""
    keras.utils.set_random_seed(0)
    net = models.build_model(name, weights=None, **NETS[name])
    runs.save_checkpoint(net, os.path.join(run_dir, "best.keras"))
    return net


def sample_images(stride):
    """Two batches of different sizes (and batch sizes) the network accepts."""
    rng = np.random.default_rng(0)
    return {"square": rng.integers(0, 256, (2, 2 * stride, 2 * stride, 3), np.uint8),
            "wide": rng.integers(0, 256, (1, stride, 3 * stride, 3), np.uint8)}


def run_export(argv):
    """`cli.run(export.main, argv)` -> (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.run(export.main, argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Each case of CASES exported by export.py, then served by one child process
    from an unrelated folder: {case: (net, images, exit code, stdout, results)}."""
    root = tmp_path_factory.mktemp("export")
    cases, manifest = {}, []
    for case, name, fmt in CASES:
        net = make_run(root / case / "run", name)
        out = root / case / "exported"
        rc, printed, err = run_export(["--run", str(root / case / "run"), "--out",
                                       str(out), "--format", fmt])
        assert rc == 0, err
        images = sample_images(net.output_stride)
        np.savez(root / case / "inputs.npz", **images)
        artefact = out / "model.tflite" if fmt == "litert" else out
        manifest.append([case, fmt, str(artefact), str(root / case / "inputs.npz")])
        cases[case] = (net, images, printed, os.listdir(root / case))
    work = root / "elsewhere"
    work.mkdir()
    (work / "manifest.json").write_text(json.dumps(manifest))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", CHILD, "manifest.json", "out.npz"],
                          cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = dict(np.load(work / "out.npz"))
    return {case: (*cases[case], {k.split("__", 1)[1]: v for k, v in results.items()
                                  if k.startswith(case + "__")})
            for case in cases}


@pytest.mark.parametrize("case", [c for c, _, _ in CASES])
def test_export_serves_probabilities_without_the_project(case, served):
    net, images, printed, files, results = served[case]
    assert not [f for f in files if f.startswith(".tmp-")]  # no temporary left behind
    assert f"multiples of {net.output_stride}" in printed
    if case.endswith("saved_model"):
        assert ".serve(images)" in printed
        assert list(results["shape"]) == [-1, -1, -1, 3]  # N, H and W all dynamic
        assert str(results["dtype"]) == "uint8"
    else:
        assert "resize_tensor_input" in printed
        assert "note:" not in printed  # the U-Net needs no Flex (select TF) op
    for name, x in images.items():
        p = results[name]
        assert p.shape == x.shape[:3] + (net.num_classes,), name
        assert p.dtype == np.float32
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
        expected = keras.ops.convert_to_numpy(keras.ops.softmax(net(x), axis=-1))
        np.testing.assert_allclose(p, expected, atol=1e-5, err_msg=name)


def test_missing_converter_fails_first_naming_the_packages(tmp_path, monkeypatch,
                                                           capsys):
    make_run(tmp_path / "run")
    # None in sys.modules makes `import` raise ImportError, installed or not.
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "exported"
    rc = cli.run(export.main, ["--run", str(tmp_path / "run"), "--out", str(out),
                               "--format", "onnx"])
    captured = capsys.readouterr()
    assert rc == cli.EXIT_USAGE
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "pip install tf2onnx onnx" in lines[0]
    assert "exporting" not in captured.out and not out.exists()  # nothing was done


@pytest.mark.parametrize("args, message", [
    (["--run", "{tmp}/empty_run"], "no checkpoint in"),
    (["--checkpoint", "{tmp}/nope.keras"], "checkpoint not found"),
    (["--checkpoint", "{tmp}/broken.keras"], "not a readable checkpoint"),
])
def test_bad_checkpoint_is_one_error_line(args, message, tmp_path, capsys):
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    argv = [a.format(tmp=tmp_path) for a in args] + ["--out", str(tmp_path / "out")]
    assert cli.run(export.main, argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "out").exists()


def test_out_with_files_is_kept_unless_overwrite_of_an_export(tmp_path, capsys):
    make_run(tmp_path / "run")
    base = ["--run", str(tmp_path / "run"), "--out"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):  # --overwrite only replaces an earlier export
        assert cli.run(export.main, base + [str(other)] + extra) == cli.EXIT_USAGE
        assert "error: --out" in capsys.readouterr().err
        assert os.listdir(other) == ["notes.txt"]

    out = tmp_path / "exported"
    assert cli.run(export.main, base + [str(out)]) == 0
    (out / "stale.txt").write_text("old")
    assert cli.run(export.main, base + [str(out)]) == cli.EXIT_USAGE
    assert "--overwrite" in capsys.readouterr().err
    assert cli.run(export.main, base + [str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "saved_model.pb").exists()

