"""GCN and the SegNet base: shapes, names, blocks, loss, training steps, save/load."""

import keras
import numpy as np
import pytest

from models import GCN, backbones, gcn as gcn_module
from models.losses import make_loss
from models.nn import SegNet


@pytest.fixture(scope="module")
def gcn():
    keras.utils.set_random_seed(0)
    return GCN(weights=None, input_size=64)


@pytest.mark.parametrize("shape", [(2, 64, 64, 3), (1, 64, 96, 3)])
def test_output_shape_square_and_non_square(gcn, shape):
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    probs = gcn.predict_probabilities(x)
    assert probs.shape == shape[:3] + (3,)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    labels = gcn.predict_labels(x)  # the arg-max in the graph, as test.py scores
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, probs.argmax(-1))


def test_every_layer_named_and_backbone_names_kept(gcn):
    names = [layer.name for layer in gcn.layers]
    assert len(names) == len(set(names))
    for default in ("conv2d", "add", "up_sampling2d", "rescaling"):
        assert not any(n == default or n.startswith(default + "_") for n in names), default
    for name in backbones.RESNET50V2_FEATURES.values():
        assert gcn.get_layer(name) is not None
    for stride in (32, 16, 8, 4):
        assert gcn.get_layer(f"gcn_stride{stride}_gc_sum").output.shape[-1] == 3
    assert gcn.get_layer("logits").output.shape[-1] == 3


def test_k_follows_the_article_rule():
    assert GCN(input_size=512).k == 15
    assert GCN(input_size=64, k=5).k == 5
    with pytest.raises(ValueError):
        GCN(input_size=64, k=0)


def test_wrong_input_size_is_a_clear_error(gcn):
    with pytest.raises(ValueError, match="multiples of 32"):
        gcn.predict_probabilities(np.zeros((1, 70, 64, 3), np.uint8))


def test_boundary_refinement_is_the_papers_residual():
    inp = keras.Input((8, 8, 4))
    model = keras.Model(inp, gcn_module.boundary_refine_block(inp, name="br"))
    conv2 = model.get_layer("br_conv2")
    conv2.set_weights([np.zeros_like(w) for w in conv2.get_weights()])
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype("float32")
    # second conv zeroed -> the block is the identity
    np.testing.assert_allclose(model(x), x, atol=1e-6)
    # and its second conv reads relu(conv1(x)), not x
    assert model.get_layer("br_conv1").activation is keras.activations.relu
    assert conv2.input is model.get_layer("br_conv1").output


def test_global_conv_block_has_both_separable_paths():
    inp = keras.Input((16, 16, 2))
    model = keras.Model(inp, gcn_module.global_conv_block(inp, 3, 7, name="gc"))
    shapes = {n: model.get_layer(f"gc_{n}").kernel.shape[:2]
              for n in ("left_kx1", "left_1xk", "right_1xk", "right_kx1")}
    assert shapes == {"left_kx1": (7, 1), "left_1xk": (1, 7),
                      "right_1xk": (1, 7), "right_kx1": (7, 1)}


def test_cross_entropy_averages_over_counted_pixels():
    # The "ce" loss is Keras' SparseCategoricalCrossentropy(from_logits=True,
    # ignore_class=255); these golden values are the ones our own loss was held to.
    # logits favour class 0 with p = e^2 / (e^2 + 2); pixel 2 is ignored.
    logits = np.array([[[[2.0, 0, 0], [2.0, 0, 0], [0, 0, 0]]]], "float32")
    y = np.array([[[0, 1, 255]]], "uint8")
    p0 = np.e ** 2 / (np.e ** 2 + 2)
    p1 = 1 / (np.e ** 2 + 2)
    expected = (-np.log(p0) - np.log(p1)) / 2  # mean over the 2 counted pixels
    loss = make_loss("ce")
    assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
    assert float(loss(y, logits)) == pytest.approx(expected, rel=1e-5)
    # the ignored pixel's logits change nothing
    assert float(loss(y, logits * [[[[1], [1], [-7]]]])) == pytest.approx(expected, rel=1e-5)
    # all ignored -> 0, not NaN
    assert float(loss(np.full((1, 1, 3), 255, "uint8"), logits)) == 0.0


def test_a_few_sgd_steps_lower_the_loss():
    keras.utils.set_random_seed(1)
    net = GCN(weights=None, input_size=64)
    # Eagerly: tracing a ResNet-50 training graph takes longer than these 8 steps.
    net.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
                loss=make_loss(net.loss_name),
                      run_eagerly=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    y = (x[..., 0] > 127).astype(np.uint8)  # a label the image itself tells
    y[:, :4] = 255
    losses = [float(net.train_on_batch(x, y)) for _ in range(8)]
    assert losses[-1] < losses[0], losses


def test_save_load_round_trip(gcn, tmp_path):
    x = np.random.default_rng(2).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    path = str(tmp_path / "best.keras")
    gcn.save(path)
    model = keras.models.load_model(path)  # Keras' own loader (after `import models`)
    assert isinstance(model, keras.Model) and model.name == "gcn"
    np.testing.assert_array_equal(model(x, training=False), gcn(x, training=False))
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, GCN) and loaded.get_config() == gcn.get_config()
    before, after = gcn.predict_probabilities(x), loaded.predict_probabilities(x)
    # same weights, same graph, each traced anew: equal up to float32 summation order
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(after.argmax(-1), before.argmax(-1))




def test_missing_weights_file_says_what_to_do(tmp_path):
    with pytest.raises(backbones.WeightsError, match="--weights"):
        GCN(weights=str(tmp_path / "nope.h5"), input_size=64)


def test_failed_imagenet_download_says_how_to_go_offline(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(backbones.WeightsError, match="--weights /path"):
        GCN(weights="imagenet", input_size=64)
