"""SOLO's training loss: focal loss on the category grids, Dice loss on the masks.

Wang et al., "SOLO: Segmenting Objects by Locations", ECCV 2020,
https://arxiv.org/abs/1912.04488, Sec. 3.3.2:

    L = L_cate + lambda * L_mask,   lambda = 3

* L_cate: sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection",
  ICCV 2017, https://arxiv.org/abs/1708.02002, Sec. 3.2) over every cell and class of
  every level, alpha 0.25, gamma 2, summed and divided by the number of positive
  cells, as RetinaNet divides by its positive anchors. Keras'
  `BinaryFocalCrossentropy` computes exactly this term per element
  (-alpha_t (1 - p_t)^gamma log p_t); we only sum it and normalise it.
* L_mask: the mean over positive cells of the Dice loss d = 1 - D(p, q),
  D = 2 sum(p q) / (sum(p^2) + sum(q^2)), between the cell's mask channel (sigmoid)
  and its object's mask.

The predicted mask logits of the positive cells are upsampled bilinearly to the image
size before the sigmoid and the Dice loss, as `SOLO.predict_instances` does at
inference; so the target masks are used as they come, never resized (the paper scores
them at the mask branch's resolution).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from models.solo_targets import CENTRE_SCALE, solo_targets

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # Sec. 3.3.2, RetinaNet's values
MASK_WEIGHT = 3.0  # lambda


def focal_loss_sum(targets, logits, alpha: float = FOCAL_ALPHA,
                   gamma: float = FOCAL_GAMMA):
    """Sigmoid focal loss summed over every element: Keras' `BinaryFocalCrossentropy`
    with class balancing. Keras averages over the last axis, so each element is made
    its own row (a trailing axis of size 1) and the rows are summed."""
    focal = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=alpha, gamma=gamma, from_logits=True,
        reduction="sum")
    return focal(tf.reshape(tf.cast(targets, tf.float32), (-1, 1)),
                 tf.reshape(tf.cast(logits, tf.float32), (-1, 1)))


def dice_loss(probabilities, targets):
    """1 - 2 sum(p q) / (sum(p^2) + sum(q^2)) for each mask of (N, H, W); shape (N,).

    Our own: `keras.losses.Dice` divides by sum(p) + sum(q), not the squares SOLO's
    Sec. 3.3.2 uses, and reduces over the batch rather than per mask."""
    p = tf.cast(probabilities, tf.float32)
    q = tf.cast(targets, tf.float32)
    overlap = tf.reduce_sum(p * q, axis=[1, 2])
    total = tf.reduce_sum(p * p, axis=[1, 2]) + tf.reduce_sum(q * q, axis=[1, 2])
    return 1.0 - 2.0 * overlap / tf.maximum(total, 1e-6)


def cell_masks(mask_logits, b, i, j, grid: int, size):
    """Mask probabilities (N, H, W) of the cells (b[n], i[n], j[n]) at the image `size`.

    `mask_logits` is one level's mask output: `(M,)` for the vanilla head, where cell
    (i, j) owns channel k = i * S + j of M (B, h, w, S^2); or `(X, Y)` for the
    decoupled head (Sec. 5 of the paper), each (B, h, w, S), where the cell's mask is
    sigmoid(Y_i) * sigmoid(X_j). A channel's logits are upsampled bilinearly to `size`
    before the sigmoid (as at inference).
    """
    def channel(logits, c):
        picked = tf.gather_nd(tf.transpose(logits, (0, 3, 1, 2)), tf.stack([b, c], 1))
        picked = tf.image.resize(tf.cast(picked, tf.float32)[..., None], size)
        return tf.sigmoid(picked[..., 0])

    if len(mask_logits) == 1:
        return channel(mask_logits[0], i * grid + j)
    x, y = mask_logits
    return channel(y, i) * channel(x, j)


def positive_masks(instance, mask_logits, masks):
    """The predicted masks of every positive cell of one level and their objects'
    masks: two (N, H, W) float32 tensors at the image size.

    `instance` (B, S, S) holds each positive cell's slot k (-1 elsewhere);
    `mask_logits` is the level's mask output as `cell_masks` takes it.
    """
    cells = tf.where(instance >= 0)  # (N, 3): b, i, j
    b, i, j = (tf.cast(cells[:, n], tf.int32) for n in range(3))
    predicted = cell_masks(mask_logits, b, i, j, tf.shape(instance)[1],
                           tf.shape(masks)[2:4])
    slot = tf.gather_nd(instance, cells)
    target = tf.gather_nd(masks, tf.stack([b, slot], axis=1))  # (N, H, W)
    return predicted, tf.cast(target, tf.float32)


class SOLOLoss:
    """L = L_cate + lambda * L_mask over all levels of a batch (Sec. 3.3.2).

    Called with the contracted targets and the model's per-level outputs, it assigns
    the targets (`solo_targets`) in the graph and returns a dict of scalars: `loss`
    (the total), `category_loss` and `mask_loss` (before lambda).

    Args:
        grids, scale_ranges, centre_scale: the label assignment (`solo_targets`).
        num_classes: object classes (no background class: a cell with no object has
            all-zero category targets).
        mask_weight: lambda.
        alpha, gamma: the focal loss's.
    """

    def __init__(self, grids, scale_ranges, num_classes: int,
                 centre_scale: float = CENTRE_SCALE, mask_weight: float = MASK_WEIGHT,
                 alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA):
        self.grids = tuple(grids)
        self.scale_ranges = tuple(tuple(r) for r in scale_ranges)
        self.num_classes = num_classes
        self.centre_scale = centre_scale
        self.mask_weight = mask_weight
        self.alpha, self.gamma = alpha, gamma

    def __call__(self, masks, classes, category_logits, mask_logits) -> dict:
        """`masks` (B, K, H, W) 0/1 and `classes` (B, K) as the data stream gives them;
        `category_logits` and `mask_logits`: the per-level outputs, finest first (a
        level's mask logits as a tuple, see `cell_masks`)."""
        targets = solo_targets(masks, classes, self.grids, self.scale_ranges,
                               self.centre_scale)
        focal, dice, positives = 0.0, [], 0
        for level, cat, msk in zip(targets, category_logits, mask_logits):
            # one_hot of -1 is all zeros: background cells are negatives of every class
            onehot = tf.one_hot(level["category"], self.num_classes)
            focal += focal_loss_sum(onehot, cat, self.alpha, self.gamma)
            predicted, target = positive_masks(level["instance"], msk, masks)
            dice.append(dice_loss(predicted, target))
            positives += tf.reduce_sum(tf.cast(level["instance"] >= 0, tf.int32))
        count = tf.maximum(tf.cast(positives, tf.float32), 1.0)
        category_loss = focal / count
        mask_loss = tf.reduce_sum(tf.concat(dice, axis=0)) / count
        return {"loss": category_loss + self.mask_weight * mask_loss,
                "category_loss": category_loss, "mask_loss": mask_loss}
