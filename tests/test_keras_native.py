"""The Keras-native core: one ResNet-50 v2 builder that takes the real weights by layer
name at every output stride; a clean `models` package; Keras' own metrics computing our
golden numbers; one `fit` whose user callbacks live for the whole run; no per-step
host synchronisation; `.keras` runs that open in a plain Python session."""

import ast
import csv
import glob
import json
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

from learning.evaluators import ConfusionMatrix
from models import backbones
from models.losses import make_loss
from models.metrics import make_metrics
from test_evaluators import PRED, TRUTH
from scripts import ROOT
from test_training import make_optimizer


# ----------------------------------------------------------------- backbone


def write_named_h5(model, path):
    """Writes `model`'s weights as the notop file `keras.applications` downloads does:
    a Keras 2 style .h5 listing layers by name (`layer_names`, `weight_names`)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0".encode() for w in layer.weights]
            group.attrs["weight_names"] = names
            for name, value in zip(names, layer.get_weights()):
                group.create_dataset(name.decode(), data=value)


@pytest.fixture(scope="module")
def plain_resnet(tmp_path_factory):
    """A plain `keras.applications.ResNet50V2` with random values in every weight (so
    a mix-up cannot pass), saved both ways."""
    plain = keras.applications.ResNet50V2(include_top=False, weights=None)
    rng = np.random.default_rng(3)
    for w in plain.weights:
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    folder = tmp_path_factory.mktemp("weights")
    named = str(folder / backbones.IMAGENET_NOTOP_FILE)
    write_named_h5(plain, named)
    keras3 = str(folder / "resnet50v2.weights.h5")
    plain.save_weights(keras3)
    return plain, named, keras3


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_resnet_weights_load_by_name_at_every_output_stride(plain_resnet, output_stride):
    plain, named, keras3 = plain_resnet
    inputs = keras.Input((None, None, 3))
    ours = backbones.resnet50_v2(inputs, named, output_stride=output_stride)
    compared = 0
    for layer in (layer for layer in plain.layers if layer.weights):
        for a, b in zip(layer.get_weights(), ours.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=layer.name)
            compared += 1
    assert compared == len(plain.weights) == len(ours.weights)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    if output_stride == 32:  # the same network as Keras': the same features
        np.testing.assert_allclose(ours(x), plain(x), rtol=1e-4, atol=1e-4)
    else:                    # dilated: the features keep the resolution asked for
        assert ours(x).shape[1:3] == (64 // output_stride, 64 // output_stride)
    # A Keras 3 .weights.h5 of the plain model loads into ours too.
    again = backbones.resnet50_v2(keras.Input((None, None, 3)), keras3, output_stride)
    for a, b in zip(ours.weights, again.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_imagenet_weights_come_from_the_keras_download(plain_resnet, monkeypatch):
    _, named, _ = plain_resnet
    asked = {}

    def get_file(fname, origin, cache_subdir, file_hash):
        asked.update(fname=fname, origin=origin, file_hash=file_hash)
        return named  # what Keras' cache would hand back
    monkeypatch.setattr(keras.utils, "get_file", get_file)
    ours = backbones.resnet50_v2(keras.Input((None, None, 3)), "imagenet")
    assert asked["fname"] == backbones.IMAGENET_NOTOP_FILE
    assert asked["origin"].endswith(backbones.IMAGENET_NOTOP_FILE)
    plain = plain_resnet[0]
    np.testing.assert_array_equal(ours.get_layer("conv1_conv").get_weights()[0],
                                  plain.get_layer("conv1_conv").get_weights()[0])


def test_a_wrong_weights_file_names_itself(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"dense_7"]
        f.create_group("dense_7").attrs["weight_names"] = [b"dense_7/kernel:0"]
        f["dense_7"].create_dataset("dense_7/kernel:0", data=np.zeros((2, 2)))
    with pytest.raises(backbones.WeightsError, match="other.h5.*dense_7"):
        backbones.resnet50_v2(keras.Input((None, None, 3)), str(path))


# ----------------------------------------------------------------- package


def imports_of(path):
    tree = ast.parse(open(path).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_models_package_has_no_import_cycle_and_never_imports_datasets():
    files = glob.glob(os.path.join(ROOT, "models", "*.py"))
    modules = {f"models.{os.path.basename(f)[:-3]}": f for f in files}
    graph = {}
    for module, path in modules.items():
        imported = imports_of(path)
        assert not any(n == "datasets" or n.startswith("datasets.") for n in imported), \
            module
        if module != "models.__init__":  # the package itself lists every module
            graph[module] = {n for n in imported if n in modules and n != module}
    done, visiting = set(), []

    def visit(module):
        assert module not in visiting, f"import cycle: {visiting + [module]}"
        if module in done:
            return
        visiting.append(module)
        for dep in graph.get(module, ()):
            visit(dep)
        visiting.pop()
        done.add(module)
    for module in graph:
        visit(module)
    assert "models.gcn" in graph  # a file per architecture, GCN included


# ----------------------------------------------------------------- metrics


def test_keras_metrics_give_the_hand_worked_scores():
    # TRUTH / PRED and their golden values are worked out in test_evaluators.py:
    # pixel accuracy 2/3, mean IoU 1/2 (two pixels labelled 255 are not counted).
    pixel_accuracy, mean_iou = make_metrics(3)
    assert isinstance(mean_iou, keras.metrics.MeanIoU)
    probabilities = np.eye(3)[PRED]  # what a model's output looks like after argmax
    for metric in (pixel_accuracy, mean_iou):
        metric.update_state(TRUTH, probabilities)
    assert float(pixel_accuracy.result()) == pytest.approx(2 / 3, abs=1e-12)
    assert float(mean_iou.result()) == pytest.approx(1 / 2, abs=1e-6)
    cm = ConfusionMatrix(3).update(TRUTH, PRED)
    np.testing.assert_array_equal(mean_iou.total_cm, cm.matrix)
    np.testing.assert_array_equal(pixel_accuracy.total_cm, cm.matrix)


def test_keras_metrics_match_the_confusion_matrix_over_many_batches():
    rng = np.random.default_rng(5)
    cm = ConfusionMatrix(3)
    metrics = make_metrics(3)
    for _ in range(4):
        truth = rng.choice([0, 1, 2, 255], size=(2, 9, 7))
        logits = rng.normal(size=(2, 9, 7, 3))
        cm.update(truth, logits)
        for metric in metrics:
            metric.update_state(truth, logits)
    assert float(metrics[0].result()) == pytest.approx(cm.pixel_accuracy, abs=1e-12)
    assert float(metrics[1].result()) == pytest.approx(cm.mean_iou, abs=1e-6)


# ----------------------------------------------------------------- one fit


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    from datasets import demo
    from datasets.files import list_images
    root = demo.generate(str(tmp_path_factory.mktemp("demo")), num_train=8, num_test=2)
    return list_images(os.path.join(root, "train"))


class Lifecycle(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(epoch)


def test_user_callbacks_see_one_run(paths, tmp_path):
    # EarlyStopping that can never see a big enough gain (min_delta 10) stops once
    # its patience of 1 epoch runs out: after epoch 2 of 5 -- only if it lives for
    # the whole run (one fit calling on_train_begin once).
    log = str(tmp_path / "user.csv")
    lifecycle = Lifecycle()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=10, patience=1)
    opt = make_optimizer(paths, 5, callbacks=[lifecycle, stop,
                                              keras.callbacks.CSVLogger(log)])
    history = opt.train(str(tmp_path / "run"), verbose=False)
    assert lifecycle.calls == ["train_begin", 0, 1]
    assert len(history["epochs"]) == 2 and stop.stopped_epoch == 1
    with open(log) as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]
    # the validation score that picks the best checkpoint is fit's own metric
    assert history["epochs"][0]["val_score"] is not None


def test_step_losses_are_each_steps_own_loss(paths, tmp_path):
    # The learning curve's per-step losses are recovered from the running means fit
    # logs (no variable is read per step); check them against each step's loss
    # computed directly on its batch, with the weights the step starts from. 6 images
    # in batches of 4: the second batch is smaller, which the recovery must weigh.
    from datasets.stream import make_training_stream

    class Direct(keras.callbacks.Callback):
        def __init__(self, opt):
            super().__init__()
            self.opt, self.losses = opt, []

        def on_train_begin(self, logs=None):
            self.batches = iter(make_training_stream(
                self.opt.train_set, 64, 4, seed=0, first_epoch=0, num_epochs=2))

        def on_train_batch_begin(self, batch, logs=None):
            images, labels = next(self.batches)
            logits = self.model(images, training=True)  # batch norm as in the step
            self.losses.append(float(make_loss("ce")(labels, logits)))

    opt = make_optimizer(paths, 2, batch_size=4)
    direct = Direct(opt)
    opt.callbacks.append(direct)
    opt.train(str(tmp_path / "run"), verbose=False)
    assert opt.steps_per_epoch == 2 and len(direct.losses) == 4
    np.testing.assert_allclose(opt.curve.step_losses, direct.losses, rtol=2e-4)


def test_tensorboard_can_be_turned_off(paths, tmp_path):
    opt = make_optimizer(paths, 1, tensorboard=False)
    opt.train(str(tmp_path / "run"), verbose=False)
    assert not os.path.exists(tmp_path / "run" / "tensorboard")
    assert os.path.isfile(tmp_path / "run" / "best.keras")


# ----------------------------------------------------------------- plain session

PLAIN_SESSION = """
import sys, numpy as np, keras, models
model = keras.models.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(x, training=False)))
print(type(model).__name__, model.input.dtype, model.optimizer.__class__.__name__,
      int(model.optimizer.iterations))
"""


def test_a_run_opens_with_keras_load_model_in_a_plain_session(paths, tmp_path):
    opt = make_optimizer(paths, 1)
    run = tmp_path / "run"
    opt.train(str(run), verbose=False)
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 48, 3), np.uint8)
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="-1")
    out = subprocess.run([sys.executable, "-c", PLAIN_SESSION, str(run / "last.keras"),
                          str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # last.keras: a compiled keras.Model with its optimizer state; uint8 in
    assert out.stdout.split()[-4:] == ["UNet", "uint8", "SGD",
                                       str(opt.steps_per_epoch)]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"),
                                  opt.model(x, training=False))
    # best.keras holds config and weights only: about half of last.keras for SGD
    # with momentum (one slot variable per weight)
    assert os.path.getsize(run / "best.keras") < 0.7 * os.path.getsize(run / "last.keras")
    state = json.load(open(run / "state.json"))["states"][-1]
    assert state["epoch"] == 1 and state["iterations"] == opt.steps_per_epoch
