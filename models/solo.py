"""SOLO: instance segmentation by locations, on an FPN.

Wang et al., "SOLO: Segmenting Objects by Locations", ECCV 2020,
https://arxiv.org/abs/1912.04488 (Sec. 3, Fig. 2 and 3). The image is divided into an
S x S grid; the cell that holds an object's centre classifies it (category branch,
S x S x C) and predicts its whole mask in its own channel k = i * S + j of the mask
branch (H x W x S^2). Objects of different sizes go to different levels of a feature
pyramid, each with its own S.

Two mask heads. `head="vanilla"`, the paper's Sec. 3.2 head: one channel per cell,
k = i * S + j, the idea in its plainest form. `head="decoupled"` (the default),
Decoupled SOLO (the paper's Sec. 5, also its best model): an X and a Y output of S
channels each, the mask of cell (i, j) being sigmoid(Y_i) * sigmoid(X_j), so each
channel learns from a whole row or column of cells instead of one cell -- what a
CPU run with few images and steps needs. Measured on the 64 x 64 instance demo (160
images, small backbone, SGD 0.03, batch 8, same busy 2-core machine, 420 s): mask
AP50 0.54 (decoupled, epoch 30) against 0.45 (vanilla, epoch 25), and a lower Dice
loss from the first epochs (0.39 against 0.56 after 5).

Sized for the CPU demo at 64 x 64 (every size is an argument): FPN width 64 (paper
256), levels P2, P3, P4 (paper P2-P6) with grids 16, 12, 8 (paper 40, 36, 24, 16, 12)
and scale ranges 0-24, 12-48, 24-128 px (the paper's 0-96, 48-192, ... at 800 px,
shrunk: overlapping, each twice the previous), 2 convolutions per head tower (paper
7). `backbone` is any of `models.backbones` ("resnet50v2", the default, with ImageNet
weights), or `"small"`, a 4-stage conv net from random weights that trains in minutes
on a CPU (the demo's choice).

The target assignment is `models.solo_targets`, the loss `models.solo_loss`;
`SOLO.compute_loss` ties them to Keras' `fit`, so the model trains on the stream's
`(images, {"masks", "classes"})` batches directly.

Example:
    >>> net = SOLO(weights=None, input_size=64, backbone="small", head="vanilla")
    >>> {k: v.shape for k, v in net(np.zeros((2, 64, 64, 3), np.uint8)).items()}
    {'category_p2': (2, 16, 16, 2), 'mask_p2': (2, 32, 32, 256), 'category_p3': ...}
    >>> net.predict_instances(images)[0]  # {"masks" (N, 64, 64) bool, "classes", ...}
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from common.labels import INSTANCE_CLASSES
from models.backbones import BACKBONES, build_backbone
from models.layers import conv
from models.nn import SegNet, image_input
from models.solo_heads import (CoordinateChannels, apply_fpn, apply_layers, make_tower,
                               small_backbone)
from models.solo_loss import SOLOLoss, cell_masks
from models.solo_nms import mask_nms, matrix_nms
from models.solo_targets import CENTRE_SCALE

PRIOR_PROBABILITY = 0.01  # category bias init, RetinaNet's (Lin et al. 2017, Sec. 4.1)


@keras.saving.register_keras_serializable(package="segmentation")
class SOLO(SegNet):
    """SOLO (Wang et al. 2020, https://arxiv.org/abs/1912.04488), CPU-sized.

    Backbone -> FPN P2..P(1 + L) -> per level l, with grid S_l, two heads whose towers
    are shared by all levels (only their last convolution is per level, Sec. 3.2):

    * category branch: P_l resized bilinearly to S_l x S_l (the paper's alignment),
      tower, 3x3 convolution to C logits: output `category_p{n}` (B, S, S, C);
    * mask branch: P_l plus two coordinate channels (CoordConv), tower, x2 bilinear
      upsampling, 1x1 convolution to S_l^2 logits: `mask_p{n}` (B, 2h, 2w, S^2) for a
      P_l of h x w (stride 2, 4, 8 for P2, P3, P4); decoupled, two 1x1 convolutions
      to S_l logits each, `mask_x_p{n}` and `mask_y_p{n}` (B, 2h, 2w, S), after one
      shared tower (the paper gives X and Y a tower each).

    Args:
        num_classes: object classes, no background (2: cat, dog).
        weights: backbone weights ("imagenet", a file, or None); the small backbone
            takes None only.
        input_size: the training image side; sets the default scale ranges.
        grids: S per level, finest first; their number is the number of levels (<= 4).
        scale_ranges: (low, high) of sqrt(box area) in pixels per level; default
            input_size * (0, 3/8), (3/16, 3/4), (3/8, 2) for three levels.
        fpn_width: FPN and head channels.
        head_depth: convolutions per head tower.
        backbone: a `models.backbones.BACKBONES` name ("resnet50v2", default) or
            "small" (random init, for the CPU demo).
        head: "decoupled" (default) or "vanilla".
        centre_scale: eps of the centre region (0.2).
        **kwargs: `keras.Model`'s (`name`, `trainable`).
    """

    architecture = "solo"
    task = "instance"
    output_stride = 32
    pretrained_backbone = True  # False for an instance with backbone="small"

    def __init__(self, num_classes: int = len(INSTANCE_CLASSES), weights=None,
                 input_size: int = 64, grids=(16, 12, 8), scale_ranges=None,
                 fpn_width: int = 64, head_depth: int = 2, backbone: str = "resnet50v2",
                 head: str = "decoupled", centre_scale: float = CENTRE_SCALE, **kwargs):
        grids = tuple(int(s) for s in grids)
        if not 1 <= len(grids) <= 4 or min(grids) < 1:
            raise ValueError(f"grids must be 1 to 4 positive sizes, one per level P2.. "
                             f"Received: {grids}")
        if scale_ranges is None:
            scale_ranges = default_scale_ranges(input_size, len(grids))
        scale_ranges = tuple((float(lo), float(hi)) for lo, hi in scale_ranges)
        if len(scale_ranges) != len(grids):
            raise ValueError(f"one scale range per grid is needed. Received: "
                             f"grids={grids}, scale_ranges={scale_ranges}")
        if backbone not in ("small", *BACKBONES):
            raise ValueError(f"backbone must be 'small' or one of {sorted(BACKBONES)}. "
                             f"Received: {backbone!r}")
        if head not in ("vanilla", "decoupled"):
            raise ValueError(f"head must be 'vanilla' or 'decoupled'. "
                             f"Received: {head!r}")
        if backbone == "small" and weights is not None:
            raise ValueError(f"the small backbone has no pretrained weights; pass "
                             f"weights=None (--weights none). Received: {weights!r}")
        if num_classes < 1 or fpn_width % 8 or head_depth < 0:
            raise ValueError(f"need num_classes >= 1, fpn_width a multiple of 8 and "
                             f"head_depth >= 0. Received: {num_classes}, {fpn_width}, "
                             f"{head_depth}")
        level_names = [f"p{n}" for n in range(2, 2 + len(grids))]

        # === Functional model ===
        inputs = image_input()
        if backbone == "small":
            x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
            feats = small_backbone(x)
        else:
            taps = build_backbone(inputs, backbone, weights).taps
            feats = [taps[s] for s in (4, 8, 16, 32)]
        pyramid = apply_fpn(feats, fpn_width, len(grids))
        groups = fpn_width // 8
        category_tower = make_tower("solo_category", fpn_width, head_depth, groups)
        mask_tower = make_tower("solo_mask", fpn_width, head_depth, groups)
        coords = CoordinateChannels(name="solo_mask_coords")
        mask_up = layers.UpSampling2D(2, interpolation="bilinear", name="solo_mask_up")
        bias = keras.initializers.Constant(-math.log((1 - PRIOR_PROBABILITY)
                                                     / PRIOR_PROBABILITY))
        outputs = {}
        for name, p, grid in zip(level_names, pyramid, grids):
            c = layers.Resizing(grid, grid, interpolation="bilinear",
                                name=f"solo_category_resize_{name}")(p)
            c = apply_layers(c, category_tower)
            outputs[f"category_{name}"] = layers.Conv2D(
                num_classes, 3, padding="same", bias_initializer=bias,
                name=f"category_{name}")(c)
            m = mask_up(apply_layers(coords(p), mask_tower))
            if head == "vanilla":
                outputs[f"mask_{name}"] = conv(m, grid * grid, 1, name=f"mask_{name}")
            else:
                for axis in ("x", "y"):
                    key = f"mask_{axis}_{name}"
                    outputs[key] = conv(m, grid, 1, name=key)
        super().__init__(inputs, outputs, num_classes=num_classes, loss=None,
                         input_size=input_size, **kwargs)

        # === Config ===
        self.grids = grids
        self.scale_ranges = scale_ranges
        self.fpn_width = fpn_width
        self.head_depth = head_depth
        self.backbone = backbone
        self.head = head
        self.centre_scale = centre_scale
        self.pretrained_backbone = backbone != "small"
        self.level_names = level_names
        # === Loss ===
        self.solo_loss = SOLOLoss(grids, scale_ranges, num_classes, centre_scale)
        self.category_loss_tracker = keras.metrics.Mean(name="category_loss")
        self.mask_loss_tracker = keras.metrics.Mean(name="mask_loss")

    def get_config(self) -> dict:
        # lists, as JSON gives them back: a checkpoint's config compares equal
        config = super().get_config()
        del config["loss"]
        return {**config, "grids": list(self.grids),
                "scale_ranges": [list(r) for r in self.scale_ranges],
                "fpn_width": self.fpn_width, "head_depth": self.head_depth,
                "backbone": self.backbone, "head": self.head,
                "centre_scale": self.centre_scale}

    # === Training ===

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """`SOLOLoss` of the batch (Keras' `fit` calls this each step); `fit` also
        reports `category_loss` and `mask_loss` (before lambda)."""
        losses = self.solo_loss(y["masks"], y["classes"],
                                [y_pred[f"category_{n}"] for n in self.level_names],
                                [self.mask_logits(y_pred, n) for n in self.level_names])
        self.category_loss_tracker.update_state(losses["category_loss"])
        self.mask_loss_tracker.update_state(losses["mask_loss"])
        total = losses["loss"]
        for extra in self.losses:  # regularisers, add_loss
            total = total + ops.cast(ops.sum(extra), total.dtype)
        return total

    # === Inference ===

    def predict_instances(self, images, score_threshold: float = 0.1,
                          mask_threshold: float = 0.5, max_instances: int = 100,
                          nms: str = "matrix", pre_nms: int = 500,
                          update_threshold: float = 0.05, kernel: str = "gaussian",
                          sigma: float = 2.0, iou_threshold: float = 0.5) -> list[dict]:
        """Instances of each image of a uint8 batch (n, H, W, 3) (Sec. 3.4).

        Cells whose category probability passes `score_threshold` give candidates;
        their mask channels are upsampled bilinearly to H x W and binarised at
        `mask_threshold`; each gets score = category probability x mask score (the
        mean probability inside its binary mask); the best `pre_nms` go to NMS:
        `nms="matrix"` (SOLOv2's Matrix NMS, `matrix_nms`: scores decay, those under
        `update_threshold` go) or `"mask"` (greedy NMS on mask IoU at
        `iou_threshold`, `mask_nms`). At most `max_instances` are kept, best first.

        Returns:
            Per image a dict: `masks` (N, H, W) bool, `classes` (N,) int32 (0 cat,
            1 dog), `scores` (N,) float32, sorted by score.
        """
        if nms not in ("matrix", "mask"):
            raise ValueError(f"nms must be 'matrix' or 'mask'. Received: {nms!r}")
        images = np.asarray(images)
        images = images[None] if images.ndim == 3 else images
        self.check_input_size(*images.shape[1:3])
        outputs = self.predict_on_batch(images)
        results = []
        for b in range(int(outputs[f"category_{self.level_names[0]}"].shape[0])):
            cand = self._candidates(outputs, b, images.shape[-3:-1], score_threshold,
                                    mask_threshold)
            masks, classes, scores = (c[:pre_nms] for c in cand)
            if nms == "matrix":
                scores = matrix_nms(masks, classes, scores, kernel, sigma)
                keep = np.flatnonzero(scores >= update_threshold)
                keep = keep[np.argsort(-scores[keep], kind="stable")]
            else:
                keep = mask_nms(masks, classes, scores, iou_threshold)
            keep = keep[:max_instances]
            results.append({"masks": masks[keep], "classes": classes[keep],
                            "scores": scores[keep].astype(np.float32)})
        return results

    def _candidates(self, outputs, b: int, size, score_threshold, mask_threshold):
        """One image's candidate (masks bool, classes, scores), best score first."""
        soft, classes, category_scores = [], [], []
        for name in self.level_names:
            # (S*S, C): row k = i * S + j is cell (i, j), the mask channel it owns
            flat = tf.reshape(tf.sigmoid(outputs[f"category_{name}"][b]),
                              (-1, self.num_classes))
            cell_class = tf.where(flat > score_threshold)  # (n, 2): cell, class
            grid = int(outputs[f"category_{name}"].shape[1])
            cell = tf.cast(cell_class[:, 0], tf.int32)
            image = tf.fill(tf.shape(cell), b)
            soft.append(cell_masks(self.mask_logits(outputs, name), image, cell // grid,
                                   cell % grid, grid, size))
            classes.append(cell_class[:, 1])
            category_scores.append(tf.gather_nd(flat, cell_class))
        soft = tf.concat(soft, 0).numpy()
        classes = tf.concat(classes, 0).numpy().astype(np.int32)
        masks = soft > mask_threshold
        area = masks.sum(axis=(1, 2))
        keep = area > 0
        maskness = (soft * masks).sum(axis=(1, 2))[keep] / area[keep]
        scores = tf.concat(category_scores, 0).numpy()[keep] * maskness
        order = np.argsort(-scores, kind="stable")
        return masks[keep][order], classes[keep][order], scores[order]

    def mask_logits(self, outputs: dict, name: str) -> tuple:
        """Level `name`'s mask output(s) in `outputs`: `(M,)`, or `(X, Y)` decoupled."""
        if self.head == "vanilla":
            return (outputs[f"mask_{name}"],)
        return outputs[f"mask_x_{name}"], outputs[f"mask_y_{name}"]

    def predict_labels(self, images, score_threshold: float = 0.3) -> np.ndarray:
        """Semantic labels (n, H, W) uint8 (0 background, class + 1 for an object)
        painted from the instances above `score_threshold`, best score on top; lets
        the pixel-accuracy and IoU evaluators score SOLO too."""
        images = np.asarray(images)
        out = np.zeros(images.shape[:3], np.uint8)
        for labels, inst in zip(out, self.predict_instances(images)):
            for n in reversed(range(len(inst["scores"]))):  # the best painted last
                if inst["scores"][n] >= score_threshold:
                    labels[inst["masks"][n]] = inst["classes"][n] + 1
        return out


def default_scale_ranges(input_size: int, levels: int) -> tuple:
    """Overlapping scale ranges, each twice the previous, as the paper's: for three
    levels input_size * (0, 3/8), (3/16, 3/4), (3/8, 2); 0-24, 12-48, 24-128 at 64.
    The last level's high bound (2 x the side) takes every larger object."""
    top = 0.375 * input_size
    ranges = [(0.0 if n == 0 else top * 2 ** (n - 1) / 2, top * 2 ** n)
              for n in range(levels)]
    ranges[-1] = (ranges[-1][0], max(ranges[-1][1], 2.0 * input_size))
    return tuple(ranges)
