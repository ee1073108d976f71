"""SOLO through the project's trainer and scripts: the instance training stream,
train.py (run folder, mask AP history, --resume), test.py (COCO results, mask AP)
and draw.py, end to end on a tiny instance demo at 64 px with the small backbone."""

import csv
import json
import os

import numpy as np
import pytest

from datasets.instances import ensure_instance_demo, read_annotations
from datasets.augment import epoch_order
from learning import cli
from datasets.instance_stream import training_stream as instance_training_stream
from learning.instances import MaskAPEvaluator
from models import ARCHITECTURES
from models.solo import SOLO
from scripts import script


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """16 training and 4 test images of the synthetic instance demo (64 x 64)."""
    return ensure_instance_demo(str(tmp_path_factory.mktemp("solo_demo")),
                                num_train=16, num_test=4)


def train_args(data, run, epochs):
    return ["--model", "solo", "--data", data, "--out", run, "--image-size", "64",
            "--batch-size", "8", "--epochs", str(epochs), "--weights", "none",
            "--solo-backbone", "small", "--lr", "0.05", "--val-fraction", "0.25",
            "--no-tensorboard"]


def test_solo_is_registered():
    assert ARCHITECTURES["solo"] is SOLO
    assert MaskAPEvaluator().is_better(0.0, MaskAPEvaluator.worst_score)  # AP 0 saves


def test_training_stream_follows_the_epoch_plans_and_skips(tiny_demo):
    records = read_annotations(os.path.join(tiny_demo, "train"))
    stream = instance_training_stream(records, 64, 6, seed=3, first_epoch=1,
                                      num_epochs=3, augment="none")
    batches = list(stream)
    # 16 images in batches of 6: 6, 6, 4 per epoch, epochs 1 and 2
    assert [len(b[0]) for b in batches] == [6, 6, 4, 6, 6, 4]
    images, targets = batches[0]
    assert images.dtype == np.uint8 and images.shape == (6, 64, 64, 3)
    assert targets["masks"].shape == (6, 8, 64, 64) and targets["classes"].shape == (6, 8)
    # epoch 1's first image is the one epoch_order puts first, whatever came before
    first = records[int(epoch_order(16, 3, 1, "none").order[0])]
    assert int((targets["classes"][0] >= 0).numpy().sum()) == len(first["classes"])
    # a resumed stream skips the batches already done and gives the same ones after
    resumed = list(instance_training_stream(records, 64, 6, seed=3, first_epoch=1,
                                            num_epochs=3, skip_batches=2,
                                            augment="none"))
    assert len(resumed) == 4
    np.testing.assert_array_equal(resumed[0][0], batches[2][0])
    with pytest.raises(ValueError, match="none or flip"):
        instance_training_stream(records, 64, 6, seed=0, first_epoch=0, num_epochs=1,
                                 augment="scale")


def test_train_resume_test_and_draw(tiny_demo, tmp_path):
    run = str(tmp_path / "run")
    train = script("train")
    assert cli.run(train.main, train_args(tiny_demo, run, 2)) == 0
    for name in ("best.keras", "last.keras", "state.json", "history.csv",
                 "learning_curve.png", "config.json", "val_annotations.json"):
        assert os.path.isfile(os.path.join(run, name)), name
    with open(os.path.join(run, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:  # the validation score is mask AP50, with AP and AP75 beside it
        for key in ("val_score", "val_mask_ap", "val_mask_ap75", "loss", "mask_loss"):
            assert 0.0 <= float(r[key]) < 10.0, (key, r)
    assert rows[0]["best"] == "True"  # AP 0 still beats the worst score
    with open(os.path.join(run, "val_annotations.json")) as f:
        assert len(json.load(f)["images"]) == 4  # 25% of 16

    assert cli.run(train.main, train_args(tiny_demo, run, 3) + ["--resume"]) == 0
    with open(os.path.join(run, "state.json")) as f:
        state = json.load(f)["states"][-1]  # the state of the last.keras on disk
    assert state["epoch"] == 3
    assert [e["epoch"] for e in state["history"]["epochs"]] == [1, 2, 3]

    assert cli.run(script("test").main, ["--data", tiny_demo, "--run", run]) == 0
    with open(os.path.join(run, "instances_pred.json")) as f:
        results = json.load(f)
    with open(os.path.join(tiny_demo, "test", "annotations.json")) as f:
        test_ids = {im["id"] for im in json.load(f)["images"]}
    for r in results:  # COCO results: image_id, category_id, RLE segmentation, score
        assert set(r) == {"image_id", "category_id", "segmentation", "score"}
        assert r["image_id"] in test_ids and r["category_id"] in (1, 2)
        assert r["segmentation"]["size"] == [64, 64]
        assert isinstance(r["segmentation"]["counts"], str) and 0 <= r["score"] <= 1
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    for key in ("mask_ap", "mask_ap50", "mask_ap75"):
        assert 0.0 <= metrics[key] <= 1.0
    assert len(os.listdir(os.path.join(run, "draws"))) == 4

    out = str(tmp_path / "drawn")
    images = os.path.join(tiny_demo, "test", "images")
    assert cli.run(script("draw").main, ["--images", images, "--run", run,
                                         "--out", out]) == 0
    assert sorted(os.listdir(out)) == sorted(
        os.path.splitext(n)[0] + ".png" for n in os.listdir(images))


def test_a_run_stopped_mid_epoch_resumes_there(tiny_demo, tmp_path):
    import keras

    from datasets.instances import read_instances
    from learning.instances import InstanceValidation, write_subset_annotations
    from learning.optimizers import MomentumOptimizer, TrainingInterrupted

    train_dir = os.path.join(tiny_demo, "train")
    records, val = read_annotations(train_dir), read_instances(train_dir)[:2]
    truth = write_subset_annotations(os.path.join(train_dir, "annotations.json"),
                                     [e.image_id for e in val], str(tmp_path / "val.json"))

    class StopAfterFirstStep(keras.callbacks.Callback):  # what Ctrl-C asks for
        def __init__(self, trainer):
            super().__init__()
            self.trainer = trainer

        def on_train_batch_end(self, batch, logs=None):
            self.trainer.request_stop()

    def trainer():
        keras.utils.set_random_seed(0)
        net = SOLO(weights=None, backbone="small", grids=(8, 6), fpn_width=32,
                   head_depth=1)
        return MomentumOptimizer(net, records, MaskAPEvaluator(),
                                 InstanceValidation(val, truth), batch_size=4,
                                 num_epochs=1, learning_rate=0.01, tensorboard=False)

    first = trainer()
    first.callbacks.append(StopAfterFirstStep(first))
    with pytest.raises(TrainingInterrupted):
        first.train(str(tmp_path), verbose=False)
    with open(tmp_path / "state.json") as f:
        saved = json.load(f)["states"][-1]
    assert saved["step_in_epoch"] == 1 and saved["epoch_metrics"]["loss"]  # running sums
    history = trainer().train(str(tmp_path), resume=True, verbose=False)
    assert [e["epoch"] for e in history["epochs"]] == [1]
    assert len(history["step_losses"]) == 4  # 16 images / 4: one before, 3 after
    assert all(np.isfinite(history["step_losses"]))
