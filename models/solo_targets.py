"""SOLO's label assignment: which grid cells of which pyramid level own an object.

Wang et al., "SOLO: Segmenting Objects by Locations", ECCV 2020,
https://arxiv.org/abs/1912.04488, Sec. 3.3.1 (label assignment) with Sec. 3.1 (the
S x S grid) and Sec. 3.2 (one grid size and one scale range per FPN level).

For an object with centre of mass (cy, cx) and bounding box h x w (in pixels):

* **level**: every level whose scale range [low, high] holds sqrt(w * h) (the paper's
  ranges overlap, so an object near a boundary trains two levels);
* **cells**: on an S x S grid over the image, every cell that meets the centre region,
  the box of size (eps * h, eps * w) around (cy, cx), eps = 0.2; as in the authors'
  code the region is clipped to the 3 x 3 cells around the centre's own cell, which
  always counts;
* **targets** of a positive cell (i, j): its category is the object's class, and its
  mask channel k = i * S + j must reproduce the object's mask.

Two objects claiming one cell: the smaller one (fewer mask pixels) keeps it -- the
paper does not say; a small object has fewer cells to lose.

Everything is TensorFlow on the whole batch (no Python loop over images or objects),
so it runs inside `fit`'s compiled train step.

    >>> targets = solo_targets(masks, classes, grids=(16, 12, 8),
    ...                        scale_ranges=((0, 24), (12, 48), (24, 128)))
    >>> targets[0]["category"].shape, targets[0]["instance"].shape   # (B, 16, 16) each
"""

from __future__ import annotations

import tensorflow as tf

CENTRE_SCALE = 0.2  # eps: the centre region is eps times the box (Sec. 3.3.1)


def instance_geometry(masks) -> dict:
    """Centre of mass, box size and area of every mask of a batch.

    Args:
        masks: (B, K, H, W) 0/1 masks (any dtype).

    Returns:
        A dict of (B, K) float32 tensors: `cy`, `cx` (centre of mass, in pixels, the
        pixel (r, c) covering [r, r + 1) x [c, c + 1)), `height`, `width` (of the
        bounding box, in pixels) and `area` (pixels in the mask).
    """
    m = tf.cast(masks > 0, tf.float32)
    height, width = tf.shape(m)[2], tf.shape(m)[3]
    rows = tf.reduce_sum(m, axis=3)  # (B, K, H): pixels per row
    cols = tf.reduce_sum(m, axis=2)  # (B, K, W)
    area = tf.reduce_sum(rows, axis=2)
    y = tf.range(height, dtype=tf.float32) + 0.5  # pixel centres
    x = tf.range(width, dtype=tf.float32) + 0.5
    safe_area = tf.maximum(area, 1.0)
    return {"cy": tf.reduce_sum(rows * y, axis=2) / safe_area,
            "cx": tf.reduce_sum(cols * x, axis=2) / safe_area,
            "height": _extent(rows > 0), "width": _extent(cols > 0), "area": area}


def _extent(occupied):
    """Length of the span from the first to the last True along the last axis."""
    n = tf.shape(occupied)[-1]
    index = tf.range(n, dtype=tf.float32)
    first = tf.reduce_min(tf.where(occupied, index, tf.cast(n, tf.float32)), axis=-1)
    last = tf.reduce_max(tf.where(occupied, index + 1.0, 0.0), axis=-1)
    return tf.maximum(last - first, 0.0)


def _cell_span(centre, half, size, grid: int):
    """Grid rows (or columns) [first, last] that the span centre +- half meets, clipped
    to the centre's cell +- 1 and to the grid; all (B, K) int32."""
    size = tf.cast(size, tf.float32)
    to_cell = lambda c: tf.cast(tf.floor(c * grid / size), tf.int32)  # noqa: E731
    own = tf.clip_by_value(to_cell(centre), 0, grid - 1)
    first = tf.maximum(tf.maximum(to_cell(centre - half), own - 1), 0)
    last = tf.minimum(tf.minimum(to_cell(centre + half), own + 1), grid - 1)
    return first, last


def solo_targets(masks, classes, grids, scale_ranges,
                 centre_scale: float = CENTRE_SCALE) -> list[dict]:
    """Assigns the objects of a batch to FPN levels and grid cells (Sec. 3.3.1).

    Args:
        masks: (B, K, H, W) 0/1 instance masks at the image size; an empty slot is all
            zeros.
        classes: (B, K) int class of each slot (0 cat, 1 dog, ...); -1 = empty slot.
        grids: the grid size S of each level, finest level first, e.g. (16, 12, 8).
        scale_ranges: (low, high) in pixels for each level: an object goes to every
            level with low <= sqrt(box height * box width) <= high.
        centre_scale: eps, the centre region's size relative to the box.

    Returns:
        One dict per level, with (B, S, S) int32 tensors:
        `category`: the class of a positive cell, -1 for background;
        `instance`: the slot k (index into K) whose mask cell (i, j) must predict in its
        mask channel i * S + j, -1 for background.
    """
    if len(grids) != len(scale_ranges):
        raise ValueError(f"one scale range per grid is needed. Received: "
                         f"grids={grids}, scale_ranges={scale_ranges}")
    classes = tf.cast(classes, tf.int32)
    g = instance_geometry(masks)
    height, width = tf.shape(masks)[2], tf.shape(masks)[3]
    valid = tf.logical_and(classes >= 0, g["area"] > 0)
    scale = tf.sqrt(g["height"] * g["width"])
    half_h = 0.5 * centre_scale * g["height"]
    half_w = 0.5 * centre_scale * g["width"]
    targets = []
    for grid, (low, high) in zip(grids, scale_ranges):
        grid = int(grid)
        on_level = valid & (scale >= low) & (scale <= high)  # (B, K)
        top, bottom = _cell_span(g["cy"], half_h, height, grid)
        left, right = _cell_span(g["cx"], half_w, width, grid)
        cells = tf.range(grid)
        # (B, K, S): the rows, and the columns, of each object's region
        in_rows = (cells >= top[..., None]) & (cells <= bottom[..., None])
        in_cols = (cells >= left[..., None]) & (cells <= right[..., None])
        claims = (in_rows[..., :, None] & in_cols[..., None, :]
                  & on_level[..., None, None])  # (B, K, S, S)
        # The smallest claiming object wins a shared cell.
        cost = tf.where(claims, g["area"][..., None, None], float("inf"))
        winner = tf.argmin(cost, axis=1, output_type=tf.int32)  # (B, S, S)
        positive = tf.reduce_any(claims, axis=1)
        category = tf.gather(classes, winner, axis=1, batch_dims=1)
        targets.append({"category": tf.where(positive, category, -1),
                        "instance": tf.where(positive, winner, -1)})
    return targets
