"""The training loop: plateau schedule, checkpoints, exact resume; and the three
scripts end to end on a tiny demo set."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from datasets import demo
from datasets.files import list_images
from learning import cli
from learning.callbacks import PlateauSchedule
from learning.evaluators import AccuracyEvaluator, IoUEvaluator
from learning.optimizers import MomentumOptimizer
from models.unet import UNet
from scripts import script



def test_plateau_schedule_follows_the_article_rule():
    plateau = PlateauSchedule(AccuracyEvaluator(), "val_pixel_accuracy", learning_rate=1.0,
                              patience=2, decay=0.1, eps=0.05)
    # scores: better, then 3 bad epochs (3 > patience 2 -> decay after the 3rd),
    # better, 3 bad (decay 0.1 -> 0.01: change 0.09 > eps), 3 bad (0.01 -> 0.001
    # would change by 0.009 <= eps: no decay, but the count restarts).
    scores = [0.5, 0.5, 0.4, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    rates, bad = [], []
    for s in scores:
        plateau.record(s)
        rates.append(plateau.learning_rate)
        bad.append(plateau.num_bad_epochs)
    assert rates == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01])
    assert bad == [0, 1, 2, 0, 0, 1, 2, 0, 1, 2, 0]
    assert plateau.best_score == 0.6
    # what a resumed run gets back is the same rule's state
    again = PlateauSchedule(AccuracyEvaluator(), "val_pixel_accuracy", learning_rate=1.0,
                            patience=2, decay=0.1, eps=0.05)
    again.set_state(plateau.get_state())
    assert again.get_state() == plateau.get_state()


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return demo.generate(str(tmp_path_factory.mktemp("demo")), num_train=12, num_test=4)


def make_optimizer(paths, epochs, seed=0, **kwargs):
    """Trains on paths[2:], validates on paths[:2]; kwargs go to the optimizer."""
    # The loop is the same for every architecture; a small U-Net keeps this quick
    # (the GCN trains in test_gcn.py and end to end below).
    keras.utils.set_random_seed(seed)
    net = UNet(weights=None, base_filters=8, depth=2, input_size=64)
    options = dict(batch_size=2, num_epochs=epochs, learning_rate=1e-3, seed=seed,
                   learning_rate_patience=0)
    options.update(kwargs)
    return MomentumOptimizer(net, paths[2:], IoUEvaluator(), paths[:2], **options)


def trainer_state(trainer) -> dict:
    """What a resumed run must get back: epoch, rate, plateau count, best scores,
    per-step losses (the callbacks' own states)."""
    return {"epoch": trainer.run_checkpoint.epoch, **trainer.schedule.get_state(),
            "step_losses": trainer.curve.step_losses}


def assert_same_state(a, b, rtol):
    state_a, state_b = trainer_state(a), trainer_state(b)
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        np.testing.assert_allclose(state_b[key], state_a[key], rtol=rtol, err_msg=key)


def test_resume_restores_every_piece_of_state(demo_root, tmp_path):
    paths = list_images(os.path.join(demo_root, "train"))[:8]
    # A: two epochs straight. B: one epoch, then a fresh process-like object resumes.
    a = make_optimizer(paths, 2)
    a.train(str(tmp_path / "a"), verbose=False)
    b = make_optimizer(paths, 1)
    b.train(str(tmp_path / "b"), verbose=False)
    b2 = make_optimizer(paths, 2, seed=0)
    history = b2.train(str(tmp_path / "b"), resume=True, verbose=False)
    assert b2.run_checkpoint.epoch == a.run_checkpoint.epoch == 2
    assert_same_state(a, b2, rtol=1e-4)  # epoch, rate, plateau count, best, losses
    np.testing.assert_allclose(history["step_losses"], a.curve.step_losses, rtol=1e-4)
    for wa, wb in zip(a.model.weights, b2.model.weights):
        np.testing.assert_allclose(wa.numpy(), wb.numpy(), rtol=1e-4, atol=1e-5)
    opt_a, opt_b = a.model.optimizer, b2.model.optimizer
    assert int(opt_a.iterations) == int(opt_b.iterations) == 6
    with open(tmp_path / "b" / "state.json") as f:
        assert json.load(f)["states"][-1]["epoch"] == 2
    last = keras.models.load_model(str(tmp_path / "b" / "last.keras"))
    assert int(last.optimizer.iterations) == 6  # the optimizer state is in last.keras
    with open(tmp_path / "b" / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    assert os.path.getsize(tmp_path / "b" / "learning_curve.png") > 1000


def test_scripts_end_to_end_on_the_demo_set(demo_root, tmp_path):
    draw, test_script, train = script("draw"), script("test"), script("train")

    run = str(tmp_path / "run")
    common = ["--data", demo_root, "--image-size", "64"]
    assert cli.run(train.main, common + ["--out", run, "--epochs", "1", "--weights",
                                         "none", "--batch-size", "2"]) == 0
    for name in ("config.json", "best.keras", "last.keras", "state.json", "history.csv",
                 "learning_curve.png"):
        assert os.path.isfile(os.path.join(run, name)), name
    assert os.listdir(os.path.join(run, "tensorboard", "train"))  # TensorBoard logs
    assert cli.run(test_script.main, common + ["--run", run]) == 0
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    for key in ("pixel_accuracy", "article_pixel_accuracy", "mean_iou", "per_class_iou"):
        assert key in metrics
    assert 0.0 <= metrics["pixel_accuracy"] <= 1.0
    assert set(metrics["per_class_iou"]) == {"background", "cat", "dog"}
    assert len(os.listdir(os.path.join(run, "draws"))) == 4
    out = str(tmp_path / "drawn")
    assert cli.run(draw.main, ["--images", os.path.join(demo_root, "test", "images"),
                               "--run", run, "--out", out]) == 0
    drawn = sorted(os.listdir(out))
    assert len(drawn) == 4
    from PIL import Image
    from datasets.files import load_image
    src = os.path.join(demo_root, "test", "images", drawn[0].replace(".png", ".jpg"))
    assert Image.open(os.path.join(out, drawn[0])).size[::-1] == load_image(src).shape[:2]


def test_scripts_give_one_clear_line_for_user_errors(tmp_path, capsys):
    draw, test_script, train = script("draw"), script("test"), script("train")
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    assert cli.run(test_script.main, ["--data", "demo", "--run", str(tmp_path)]) == 2
    assert "no checkpoint in" in capsys.readouterr().err
    assert cli.run(draw.main, ["--images", str(empty), "--run", str(tmp_path),
                               "--out", str(tmp_path / "o")]) == 2
    assert "no .jpg" in capsys.readouterr().err
    assert cli.run(train.main, ["--data", str(tmp_path / "missing")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.get_args_parser().parse_args(["--bogus"])


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_a_few_steps_lower_the_loss_under_each_precision_policy(policy):
    from test_architectures import images_and_labels
    keras.mixed_precision.set_global_policy(policy)  # what train.py --precision sets
    try:
        keras.utils.set_random_seed(1)
        net = UNet(weights=None, base_filters=8, depth=2)
        compute = "float32" if policy == "float32" else policy.split("_")[1]
        assert net.get_layer("down1_1_conv").compute_dtype == compute
        assert net.output.dtype == "float32"  # logits (and so the loss) in float32
        opt = MomentumOptimizer(net, [], IoUEvaluator(), learning_rate=0.05)
        opt.compile()  # as the trainer compiles (float16: with loss scaling)
        images, labels = images_and_labels(32, 32)
        losses = [float(net.train_on_batch(images, labels)[0]) for _ in range(6)]
        assert all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0], losses
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_precision_auto_resolves_and_resume_keeps_the_runs(demo_root, tmp_path, capsys):
    from learning import precision
    policy, why = precision.auto_policy()
    assert policy in precision.POLICIES and why
    expected = "mixed_bfloat16" if precision.cpu_has_bfloat16() else "float32"
    assert policy == expected  # no GPU here: the CPU decides
    train = script("train")
    run = str(tmp_path / "run")
    argv = ["--data", demo_root, "--out", run, "--model", "unet", "--image-size", "64",
            "--batch-size", "4", "--weights", "none", "--no-tensorboard"]
    try:
        assert cli.run(train.main, argv + ["--epochs", "1", "--precision",
                                           "mixed_bfloat16"]) == 0
        with open(os.path.join(run, "config.json")) as f:
            assert json.load(f)["precision"] == "mixed_bfloat16"
        capsys.readouterr()
        assert cli.run(train.main, argv + ["--epochs", "2", "--resume"]) == 0
        assert "precision: mixed_bfloat16" in capsys.readouterr().out  # the run's
    finally:
        keras.mixed_precision.set_global_policy("float32")
