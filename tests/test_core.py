"""The learnable core: one object per network (a `SegNet` is the Keras model), runs of
the old two-object format still load, Keras' private names in one shim module, floors
that import only downwards, files of one idea, and flags that must apply."""

import ast
import glob
import json
import os
import zipfile

import keras
import numpy as np
import pytest

import models
from learning import cli, multiworker_shim
from models.solo import SOLO
from models.unet import UNet
from scripts import ROOT, script

PACKAGES = ("common", "datasets", "models", "learning")


def project_modules(include_scripts=True):
    """{module name: path} of every non-test Python file of the project."""
    paths = [p for pkg in PACKAGES for p in glob.glob(os.path.join(ROOT, pkg, "*.py"))]
    if include_scripts:
        paths += glob.glob(os.path.join(ROOT, "*.py"))
        paths += glob.glob(os.path.join(ROOT, "bench", "*.py"))
    return {os.path.relpath(p, ROOT)[:-3].replace(os.sep, "."): p for p in sorted(paths)}


def imported(path):
    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


# --------------------------------------------------------------------- one object


def test_load_model_gives_back_the_architectures_own_class(tmp_path):
    net = UNet(base_filters=4, depth=2, input_size=64)
    path = str(tmp_path / "best.keras")
    net.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is UNet
    assert isinstance(loaded, models.SegNet) and isinstance(loaded, keras.Model)
    assert loaded.get_config() == net.get_config()
    assert loaded.input_size == 64 and loaded.output_stride == 4
    assert not hasattr(loaded, "segnet") and not hasattr(loaded, "model")
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), np.uint8)
    np.testing.assert_array_equal(loaded.predict_labels(x), net.predict_labels(x))


def old_format(path, out):
    """Rewrites a `.keras` file as the project saved it before networks were Keras
    models: a `SegmentationModel` (or `SOLOModel`) whose config nests the
    architecture's; the weights file is unchanged."""
    with zipfile.ZipFile(path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    inner = dict(config["config"])
    for key in ("name", "trainable"):
        inner.pop(key)
    outer = "SOLOModel" if config["class_name"] == "SOLO" else "SegmentationModel"
    config.update(class_name=outer, registered_name=f"segmentation>{outer}",
                  config={"name": config["config"]["name"], "segnet": {
                      "module": config["module"], "class_name": config["class_name"],
                      "config": inner, "registered_name": config["registered_name"]}})
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out


@pytest.mark.parametrize("make", [lambda: UNet(base_filters=4, depth=2),
                                  lambda: SOLO(backbone="small", grids=(4,),
                                               fpn_width=16, head_depth=1)],
                         ids=["unet", "solo"])
def test_an_old_run_file_still_loads_and_predicts(make, tmp_path):
    net = make()
    new = str(tmp_path / "new.keras")
    net.save(new)
    old = old_format(new, str(tmp_path / "old.keras"))
    with zipfile.ZipFile(old) as z:
        assert json.loads(z.read("config.json"))["class_name"] in ("SegmentationModel",
                                                                   "SOLOModel")
    loaded = keras.models.load_model(old)
    assert type(loaded) is type(net)
    x = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), np.uint8)
    keras.tree.map_structure(np.testing.assert_array_equal, loaded(x), net(x))


def test_resuming_an_old_run_is_refused_with_a_clear_message(tmp_path, capsys):
    from datasets import demo
    data = demo.generate(str(tmp_path / "data"), num_train=4, num_test=1)
    run = tmp_path / "run"
    run.mkdir()
    net = UNet(base_filters=4, depth=2, input_size=64)
    net.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    net.save(str(tmp_path / "new.keras"))
    old_format(str(tmp_path / "new.keras"), str(run / "last.keras"))
    (run / "state.json").write_text(json.dumps({"states": [
        {"epoch": 1, "iterations": 0, "step_in_epoch": 0, "learning_rate": 0.1}]}))
    argv = ["--data", data, "--out", str(run), "--model", "unet", "--image-size", "64",
            "--weights", "none", "--resume", "--no-tensorboard"]
    assert cli.run(script("train").main, argv) == 2
    err = capsys.readouterr().err
    assert "older version of this project" in err or "different model" in err, err
    assert "Traceback" not in err


# --------------------------------------------------------------------- private names


def private_names_used(path):
    """Attribute names with one leading underscore that `path` reads or calls."""
    tree = ast.parse(open(path).read())
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and node.attr.startswith("_") and not node.attr.startswith("__")}


def private_names_defined(paths):
    """The underscore names the project defines itself (functions, attributes)."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_")}


def test_keras_private_names_live_in_the_shim_only():
    modules = project_modules()
    shim = os.path.join(ROOT, "learning", "multiworker_shim.py")
    ours = private_names_defined([p for p in modules.values() if p != shim])
    outside = {name: sorted(private_names_used(path) - ours)
               for name, path in modules.items() if path != shim}
    assert {k: v for k, v in outside.items() if v} == {}
    assert set(multiworker_shim.KERAS_PRIVATE_METHODS) <= private_names_used(shim)


def test_the_shim_names_a_missing_keras_method(monkeypatch):
    multiworker_shim.check()  # the Keras installed here has them
    monkeypatch.setattr(multiworker_shim, "KERAS_PRIVATE_METHODS",
                        ("_maybe_symbolic_build", "_no_such_keras_method"))
    with pytest.raises(RuntimeError, match="keras.Model._no_such_keras_method"):
        multiworker_shim.check()


def test_one_machine_runs_keras_own_fit_code():
    net = UNet(base_filters=4, depth=2)
    from learning import distribute
    distribute.adapt(net)  # no worker cluster: nothing changes
    for name in ("train_step", "test_step", "_maybe_symbolic_build"):
        assert getattr(type(net), name) is getattr(keras.Model, name), name
        assert name not in vars(net), name


# --------------------------------------------------------------------- structure


def test_floors_import_only_downwards():
    floors = {"common": 0, "datasets": 1, "models": 1, "learning": 2}
    for module, path in project_modules(include_scripts=False).items():
        package = module.split(".")[0]
        for name in imported(path):
            top = name.split(".")[0]
            if top in floors and top != package:
                assert floors[top] < floors[package], f"{module} imports {name}"
    # the two bottom packages do not import each other
    for module, path in project_modules(include_scripts=False).items():
        if module.startswith("models."):
            assert not any(n.split(".")[0] == "datasets" for n in imported(path)), module


def test_no_module_is_over_300_lines():
    long = {m: n for m, p in project_modules().items()
            if (n := sum(1 for _ in open(p))) > 300}
    assert long == {}


def test_scripts_carry_no_task_branch():
    # train.py, test.py and draw.py dispatch through `learning.tasks.TASKS`: none
    # compares a model's task or name, opens a checkpoint's zip or imports a task.
    for name in ("train", "test", "draw"):
        path = os.path.join(ROOT, f"{name}.py")
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                parts = list(ast.walk(node))
                assert not any(isinstance(n, ast.Attribute) and n.attr == "task"
                               for n in parts), (name, ast.unparse(node))
                assert not any(isinstance(n, ast.Constant) and n.value in (
                    "solo", "instance", "semantic") for n in parts), (name,
                                                                       ast.unparse(node))
        names = imported(path)
        assert "zipfile" not in names and not names & {"learning.instances",
                                                       "learning.semantic"}, name


# --------------------------------------------------------------------- flags


def test_a_flag_the_model_does_not_take_is_an_error(tmp_path, capsys):
    train = script("train")
    argv = ["--data", "demo", "--out", str(tmp_path / "run"), "--weights", "none",
            "--image-size", "64", "--epochs", "1"]
    assert cli.run(train.main, argv + ["--model", "fcn8s", "--k", "7"]) == 2
    err = capsys.readouterr().err
    assert "--k does not apply to --model fcn8s" in err and "gcn" in err
    assert cli.run(train.main, argv + ["--model", "unet", "--solo-head", "vanilla"]) == 2
    assert "--solo-head does not apply to --model unet" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run" / "last.keras")
