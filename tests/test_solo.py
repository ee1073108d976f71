"""SOLO: shapes and names, label assignment, losses, NMS, training steps, save/load."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.solo import SOLO, default_scale_ranges
from models.solo_heads import CoordinateChannels
from models.solo_nms import mask_iou, mask_nms, matrix_nms
from models.solo_loss import SOLOLoss, dice_loss, focal_loss_sum, positive_masks
from models.solo_targets import solo_targets

GRIDS = (16, 12, 8)
RANGES = ((0, 24), (12, 48), (24, 128))


@pytest.fixture(scope="module")
def solo():
    keras.utils.set_random_seed(0)
    return SOLO(weights=None, input_size=64, backbone="small", head="vanilla")


def hand_made_batch():
    """One image: a small 8x8 cat and a 40x30 dog; the third slot is empty.

    cat: rows 9-16, cols 41-48: centre of mass (13, 45), sqrt(8 * 8) = 8 -> P2 only.
    dog: rows 20-59, cols 5-34: centre (40, 20), sqrt(40 * 30) = 34.6 -> P3 and P4
         (the ranges 12-48 and 24-128 overlap there).
    """
    masks = np.zeros((1, 3, 64, 64), np.uint8)
    masks[0, 0, 9:17, 41:49] = 1
    masks[0, 1, 20:60, 5:35] = 1
    return masks, np.array([[0, 1, -1]], np.int32)


def synthetic_batch():
    """Two 64x64 images, flat objects on noise, in the data stream's contract."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 120, (2, 64, 64, 3), dtype=np.uint8)
    masks = np.zeros((2, 4, 64, 64), np.uint8)
    classes = np.full((2, 4), -1, np.int32)
    for b, k, rows, cols, cls in [(0, 0, (10, 30), (10, 34), 0),
                                  (0, 1, (36, 60), (30, 60), 1),
                                  (1, 0, (5, 15), (40, 52), 1),
                                  (1, 1, (30, 56), (4, 28), 0)]:
        masks[b, k, rows[0]:rows[1], cols[0]:cols[1]] = 1
        classes[b, k] = cls
        images[b][masks[b, k] > 0] = (230, 160, 40) if cls == 0 else (200, 60, 200)
    return images, {"masks": masks, "classes": classes}


# --------------------------------------------------------------------------- model


def test_output_shapes_and_layer_names(solo):
    out = solo(np.zeros((2, 64, 64, 3), np.uint8))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "category_p2": (2, 16, 16, 2), "mask_p2": (2, 32, 32, 256),
        "category_p3": (2, 12, 12, 2), "mask_p3": (2, 16, 16, 144),
        "category_p4": (2, 8, 8, 2), "mask_p4": (2, 8, 8, 64)}
    names = [layer.name for layer in solo.layers]
    assert len(names) == len(set(names))
    for default in ("conv2d", "add", "rescaling", "group_normalization", "re_lu",
                    "resizing", "up_sampling2d", "coordinate_channels"):
        assert not any(n == default or n.startswith(f"{default}_") for n in names)
    for name in ("fpn_lateral_c5", "fpn_p3_sum", "fpn_p2", "solo_mask_coords",
                 "solo_mask_conv1", "solo_category_gn2", "solo_category_resize_p3"):
        assert solo.get_layer(name) is not None
    # the towers are shared by the levels; the last convolution is per level
    assert len(solo.get_layer("solo_mask_conv1")._inbound_nodes) == 3
    assert solo.get_layer("mask_p3").kernel.shape == (1, 1, 64, 144)
    # category logits start at the focal loss prior, p = 0.01
    np.testing.assert_allclose(solo.get_layer("category_p2").bias.numpy(),
                               math.log(0.01 / 0.99), rtol=1e-6)


def test_resnet_backbone_keeps_keras_names():
    net = SOLO(weights=None, grids=(8, 6), fpn_width=32, head_depth=1,
               head="vanilla")  # ResNet-50 v2
    out = net(np.zeros((1, 64, 64, 3), np.uint8))
    assert tuple(out["mask_p3"].shape) == (1, 16, 16, 36)
    assert net.get_layer("conv4_block5_out") is not None
    assert net.architecture == "solo" and net.task == "instance"


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError, match="pretrained"):
        SOLO(weights="imagenet", backbone="small")
    with pytest.raises(ValueError, match="one scale range per grid"):
        SOLO(grids=(8, 4), scale_ranges=((0, 64),), backbone="small")


def test_default_scale_ranges_at_64():
    assert default_scale_ranges(64, 3) == ((0.0, 24.0), (12.0, 48.0), (24.0, 128.0))


def test_coordinate_channels_span_minus_one_to_one():
    out = CoordinateChannels()(np.zeros((1, 3, 5, 4), np.float32)).numpy()
    assert out.shape == (1, 3, 5, 6)
    np.testing.assert_allclose(out[0, 0, :, 4], [-1, -0.5, 0, 0.5, 1])  # x
    np.testing.assert_allclose(out[0, :, 0, 5], [-1, 0, 1])  # y


# --------------------------------------------------------------------------- targets


def test_target_assignment_on_a_hand_made_example():
    masks, classes = hand_made_batch()
    p2, p3, p4 = solo_targets(masks, classes, GRIDS, RANGES)

    def positives(level):
        cat, inst = level["category"].numpy()[0], level["instance"].numpy()[0]
        cells = [tuple(c) for c in np.argwhere(cat >= 0)]
        return cells, {int(cat[c]) for c in cells}, {int(inst[c]) for c in cells}

    # P2, 4-px cells: centre (13, 45) -> cell (3, 11); the region 13 +- 0.8, 45 +- 0.8
    # stays inside it. Mask channel 3 * 16 + 11 = 59 learns slot 0's mask.
    assert positives(p2) == ([(3, 11)], {0}, {0})
    # P3, 64/12-px cells: centre (40, 20) -> cell (7, 3); region rows 36..44 -> cells
    # 6..8, cols 17..23 -> 3..4.
    assert positives(p3) == ([(6, 3), (6, 4), (7, 3), (7, 4), (8, 3), (8, 4)], {1}, {1})
    # P4, 8-px cells: rows 36..44 -> 4..5, cols 17..23 -> 2.
    assert positives(p4) == ([(4, 2), (5, 2)], {1}, {1})
    # the empty slot (class -1) is never assigned; every other cell is background
    assert (p2["category"].numpy() == -1).sum() == 16 * 16 - 1


def test_positive_cell_reads_its_own_mask_channel():
    masks, classes = hand_made_batch()
    p2 = solo_targets(masks, classes, GRIDS, RANGES)[0]
    # vanilla: channel k holds the logit k - 59, so only channel 3 * 16 + 11 = 59
    # gives probability 0.5
    logits = np.broadcast_to(np.arange(256, dtype=np.float32) - 59, (1, 32, 32, 256))
    predicted, target = positive_masks(p2["instance"], (tf.constant(logits),), masks)
    np.testing.assert_allclose(predicted.numpy(), 0.5)
    np.testing.assert_array_equal(target.numpy()[0], masks[0, 0])  # at image size
    # decoupled: sigmoid(Y_3) * sigmoid(X_11), each 0.5 only in its own channel
    x = np.broadcast_to(np.arange(16, dtype=np.float32) - 11, (1, 32, 32, 16))
    y = np.broadcast_to(np.arange(16, dtype=np.float32) - 3, (1, 32, 32, 16))
    predicted, _ = positive_masks(p2["instance"], (tf.constant(x), tf.constant(y)),
                                  masks)
    np.testing.assert_allclose(predicted.numpy(), 0.25)


def test_decoupled_head_outputs_and_instances():
    net = SOLO(weights=None, backbone="small", grids=(8, 6), head_depth=1)
    assert net.head == "decoupled"  # the default
    images, targets = synthetic_batch()
    out = net(images)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "category_p2": (2, 8, 8, 2), "mask_x_p2": (2, 32, 32, 8),
        "mask_y_p2": (2, 32, 32, 8), "category_p3": (2, 6, 6, 2),
        "mask_x_p3": (2, 16, 16, 6), "mask_y_p3": (2, 16, 16, 6)}
    assert np.isfinite(float(net.compute_loss(y=targets, y_pred=out)))
    inst = net.predict_instances(images, score_threshold=0.0, max_instances=3)[0]
    assert inst["masks"].shape[1:] == (64, 64) and len(inst["scores"]) <= 3


def test_smaller_object_wins_a_shared_cell():
    masks = np.zeros((1, 2, 64, 64), np.uint8)
    masks[0, 0, 12:52, 12:52] = 1  # 40x40, centre (32, 32): cells 3..4 x 3..4
    masks[0, 1, 34:38, 34:38] = 1  # 4x4, centre (36, 36): cell (4, 4) only
    p = solo_targets(masks, np.array([[1, 0]]), (8,), ((0, 128),))[0]
    assert p["instance"].numpy()[0, 4, 4] == 1 and p["category"].numpy()[0, 4, 4] == 0
    assert p["instance"].numpy()[0, 3, 3] == 0  # the big one keeps its other cells


# --------------------------------------------------------------------------- losses


def test_focal_loss_matches_hand_value():
    # logit 0, target 1: p_t = 0.5, alpha_t = 0.25 -> 0.25 * 0.5^2 * ln 2
    # logit ln 3, target 0: p = 0.75, p_t = 0.25, alpha_t = 0.75 -> 0.75 * 0.75^2 * ln 4
    expected = 0.25 * 0.25 * math.log(2) + 0.75 * 0.5625 * math.log(4)
    got = focal_loss_sum(np.array([[1.0, 0.0]]), np.array([[0.0, math.log(3)]]))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_dice_loss_matches_hand_value():
    # p = 0.5 on 4 pixels, q covers 2: 1 - 2 * 1 / (4 * 0.25 + 2) = 1/3
    p = np.full((1, 2, 2), 0.5, np.float32)
    q = np.array([[[1, 1], [0, 0]]], np.float32)
    np.testing.assert_allclose(dice_loss(p, q).numpy(), [1 / 3], rtol=1e-6)


def test_solo_loss_normalises_by_positives():
    masks, classes = hand_made_batch()
    loss = SOLOLoss(GRIDS, RANGES, num_classes=2)
    zeros = [np.zeros((1, s, s, 2), np.float32) for s in GRIDS]
    mask_logits = [(np.zeros((1, 64 // st, 64 // st, s * s), np.float32),)  # vanilla
                   for st, s in zip((2, 4, 8), GRIDS)]
    out = {k: float(v) for k, v in loss(masks, classes, zeros, mask_logits).items()}
    # all logits 0 (p = 0.5): 9 positive cells, each one class right and one wrong;
    # every other cell two negatives.
    cells = sum(s * s for s in GRIDS)
    focal = 9 * 0.25 * 0.25 * math.log(2) + (2 * cells - 9) * 0.75 * 0.25 * math.log(2)
    np.testing.assert_allclose(out["category_loss"], focal / 9, rtol=1e-5)
    assert 0 < out["mask_loss"] < 1
    np.testing.assert_allclose(out["loss"], out["category_loss"] + 3 * out["mask_loss"],
                               rtol=1e-6)


# --------------------------------------------------------------------------- NMS


def nms_masks():
    """A 20x20 square, the same shifted down by one pixel (IoU 380/420) and a
    disjoint square, scores 0.9, 0.8, 0.7, one class."""
    masks = np.zeros((3, 64, 64), bool)
    masks[0, 0:20, 0:20] = masks[1, 1:21, 0:20] = masks[2, 40:60, 40:60] = True
    return masks, np.zeros(3, np.int32), np.array([0.9, 0.8, 0.7], np.float32)


def test_matrix_nms_decays_the_duplicate_only():
    masks, classes, scores = nms_masks()
    iou = 380 / 420
    np.testing.assert_allclose(mask_iou(masks)[0, 1], iou, rtol=1e-6)
    np.testing.assert_allclose(matrix_nms(masks, classes, scores, "gaussian", 2.0),
                               [0.9, 0.8 * math.exp(-2 * iou ** 2), 0.7], rtol=1e-5)
    linear = matrix_nms(masks, classes, scores, "linear")
    np.testing.assert_allclose(linear, [0.9, 0.8 * (1 - iou), 0.7], rtol=1e-5)
    assert list(np.flatnonzero(linear >= 0.1)) == [0, 2]  # one duplicate, both disjoint
    # another class does not suppress
    np.testing.assert_allclose(matrix_nms(masks, np.array([0, 1, 0]), scores), scores)


def test_mask_nms_keeps_one_of_two_duplicates_and_both_disjoint():
    masks, classes, scores = nms_masks()
    assert list(mask_nms(masks, classes, scores)) == [0, 2]
    assert list(mask_nms(masks, np.array([0, 1, 0]), scores)) == [0, 1, 2]


# --------------------------------------------------------------------------- training


def test_training_steps_lower_the_loss_and_instances_come_out(tmp_path):
    import models  # noqa: F401 -- registers the project's Keras objects
    keras.utils.set_random_seed(1)
    net = SOLO(weights=None, backbone="small", grids=(8, 6), fpn_width=32, head_depth=1)
    images, targets = synthetic_batch()
    net.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    history = net.fit(images, targets, batch_size=2, epochs=12, verbose=0).history
    assert {"loss", "category_loss", "mask_loss"} <= set(history)
    assert history["loss"][-1] < 0.7 * history["loss"][0], history["loss"]
    for inst in net.predict_instances(images, max_instances=5):
        n = len(inst["scores"])
        assert 0 < n <= 5
        assert inst["masks"].shape == (n, 64, 64) and inst["masks"].dtype == bool
        assert inst["classes"].dtype == np.int32 and set(inst["classes"]) <= {0, 1}
        assert np.all(np.diff(inst["scores"]) <= 0)
    labels = net.predict_labels(images, score_threshold=0.0)
    assert labels.shape == (2, 64, 64) and labels.max() <= 2
    # a compiled checkpoint (train.py's last.keras) keeps the optimizer and the loss
    net.save(str(tmp_path / "last.keras"))
    loaded = keras.models.load_model(str(tmp_path / "last.keras"))
    assert int(loaded.optimizer.iterations.numpy()) == 12
    np.testing.assert_allclose(loaded(images)["category_p3"],
                               net(images)["category_p3"], rtol=1e-5, atol=1e-6)


def test_save_and_load_give_the_same_predictions(solo, tmp_path):
    import models  # noqa: F401 -- registers the project's Keras objects
    images, targets = synthetic_batch()
    path = str(tmp_path / "solo.keras")
    solo.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is SOLO and loaded.get_config() == solo.get_config()
    before, after = solo(images), loaded(images)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-6)
    a = solo.predict_instances(images, score_threshold=0.05)
    b = loaded.predict_instances(images, score_threshold=0.05)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["masks"], y["masks"])
        np.testing.assert_allclose(x["scores"], y["scores"], rtol=1e-5)
    # the loaded model still computes its loss from the stream's targets
    assert np.isfinite(float(loaded.compute_loss(y=targets, y_pred=after)))
