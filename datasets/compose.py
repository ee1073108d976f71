"""Composing images of several pets from one-pet trimap images (Oxford-IIIT Pet has one
pet per image), to learn instance segmentation from; `datasets.instance_folder` writes
them as COCO folders and makes the datasets.

Each composed image is square, `size` pixels a side (256 by default), and holds 2-4
pets:

1. A background: another source image, scaled to cover the square and cropped at a
   random place, with its own pet painted out (OpenCV inpainting over the trimap's pet
   and unknown pixels, grown by 2 px), so no unlabelled pet is left in it.
2. 2-4 pets, each cut out of its image along the trimap foreground (pet + unknown
   border, so the fur's fringe comes along; 1-2 px strokes and specks away from the
   pet, which some real trimaps carry, are dropped), flipped at random, scaled so the longer
   side of its box is 35-65% of the image side (nearest-neighbour for the cut-out's
   mask, so pixels and mask agree exactly), and pasted at a random place fully inside
   the image. Later pets occlude earlier ones.
3. Each pet's annotation is its visible part: the pixels where it is the top pet, so
   the masks of one image are disjoint. A pet left with less than 20% of itself, or
   under 0.4% of the image, is removed (not pasted at all, so no unlabelled sliver
   stays); a layout left with fewer than 2 pets is drawn again.

Every random choice of image i comes from `numpy.random.default_rng([seed, split, i])`,
so a seed gives the same files, byte for byte, whatever the count asked for.
A source pair that does not load, or whose trimap marks no pet (the release's
`Abyssinian_34`), is logged and left out. Pets are read from disk when picked, so
memory does not grow with the source folder.

`synthetic_sources` gives the semantic demo's synthetic pets (`datasets.demo_drawing`)
as sources, for the demo instance set.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator, NamedTuple

import cv2
import numpy as np

from datasets.data import load_example
from datasets.files import (TRIMAP_BACKGROUND, DataError, image_name, is_cat, list_images,
                            mask_path)

log = logging.getLogger(__name__)

DEFAULT_SIZE = 256
PETS_RANGE = (2, 4)  # pets pasted per image
SCALE_RANGE = (0.35, 0.65)  # longer side of a pet's box / image side
MIN_VISIBLE_FRACTION = 0.2  # a pet must keep this much of itself visible...
MIN_AREA_FRACTION = 0.004  # ...and cover this much of the image (262 px at 256)
MAX_TRIES = 100  # layouts drawn for one image before giving up


class Source(NamedTuple):
    """One source pet: `image` (H, W, 3) uint8, `pet` (H, W) bool (trimap pet or
    unknown), `cat` its class."""

    name: str
    image: np.ndarray
    pet: np.ndarray
    cat: bool


class Composite(NamedTuple):
    """One composed image: `image` (S, S, 3) uint8, `masks` (K, S, S) bool visible
    parts (disjoint), `classes` K ints (0 cat, 1 dog), `sources` the K pets' source
    names, `background` the background's source name."""

    image: np.ndarray
    masks: np.ndarray
    classes: list[int]
    sources: list[str]
    background: str


# --------------------------------------------------------------------------- sources


def _clean(pet: np.ndarray) -> np.ndarray:
    """Drops the 1-2 px strokes and specks some real trimaps carry away from the pet:
    a 3x3 opening, then only regions of at least a tenth of the largest one stay."""
    pet = cv2.morphologyEx(pet.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, regions, stats, _ = cv2.connectedComponentsWithStats(pet, connectivity=8)
    if count <= 2:
        return pet.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return np.isin(regions, 1 + np.flatnonzero(areas >= 0.1 * areas.max()))


def load_source(path: str) -> Source:
    """Reads an image and its trimap (`masks/NAME.png`) with the project's checks;
    raises `DataError` naming the file, also when the trimap marks no pet."""
    example = load_example(path, None, with_label=True)
    pet = _clean(example.label != 0)  # 1 cat or 2 dog (trimap pet), 255 (trimap unknown)
    if pet.sum() < 16:
        raise DataError(mask_path(path), "trimap marks no pet (no value 1 or 3)")
    return Source(image_name(path), example.image, pet, is_cat(image_name(path)))


def usable_sources(folder: str, progress: bool = True) -> list[str]:
    """Paths of `folder/images` whose pair loads and holds a pet; every other file is
    logged and left out. Raises `DataError` when fewer than 3 are usable."""
    paths = list_images(folder)
    if progress:
        from tqdm import tqdm
        paths = tqdm(paths, desc=f"checking {folder}", unit="img", leave=False)
    good = []
    for path in paths:
        try:
            load_source(path)
        except DataError as e:
            log.warning("skipped %s", e)
        else:
            good.append(path)
    if len(good) < 3:
        raise DataError(folder, f"only {len(good)} usable image/trimap pair(s); composing "
                        "needs at least 3 (one background, two pets)")
    return good


# --------------------------------------------------------------------------- pieces


def background(source: Source, size: int, rng: np.random.Generator) -> np.ndarray:
    """`source`'s image with its pet painted out, covering a (size, size) square."""
    h, w = source.pet.shape
    scale = size / min(h, w)
    out_w, out_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = cv2.resize(source.image, (out_w, out_h), interpolation=cv2.INTER_AREA
                       if scale < 1 else cv2.INTER_LINEAR)
    hole = cv2.resize(source.pet.astype(np.uint8), (out_w, out_h),
                      interpolation=cv2.INTER_NEAREST)
    y, x = int(rng.integers(out_h - size + 1)), int(rng.integers(out_w - size + 1))
    image, hole = image[y:y + size, x:x + size], hole[y:y + size, x:x + size]
    hole = cv2.dilate(hole, np.ones((5, 5), np.uint8))  # the fur's fringe goes too
    return cv2.inpaint(np.ascontiguousarray(image), hole, 3, cv2.INPAINT_TELEA)


def _scaled_pet(source: Source, size: int, rng: np.random.Generator):
    """The pet cut to its box, flipped at random and scaled: (image, alpha bool)."""
    ys, xs = np.nonzero(source.pet)
    box = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    image, alpha = source.image[box], source.pet[box].astype(np.uint8)
    if rng.random() < 0.5:
        image, alpha = image[:, ::-1], alpha[:, ::-1]
    scale = rng.uniform(*SCALE_RANGE) * size / max(alpha.shape)
    w = min(size, max(1, round(alpha.shape[1] * scale)))
    h = min(size, max(1, round(alpha.shape[0] * scale)))
    image = cv2.resize(np.ascontiguousarray(image), (w, h),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    alpha = cv2.resize(np.ascontiguousarray(alpha), (w, h), interpolation=cv2.INTER_NEAREST)
    return image, alpha.astype(bool)


def _paste(canvas: np.ndarray, layers) -> np.ndarray:
    """Pastes (image, alpha, y, x) layers in order; returns the top layer's index per
    pixel (-1 where none), from which each visible mask follows."""
    owner = np.full(canvas.shape[:2], -1, np.int32)
    for k, (image, alpha, y, x) in enumerate(layers):
        h, w = alpha.shape
        canvas[y:y + h, x:x + w][alpha] = image[alpha]
        owner[y:y + h, x:x + w][alpha] = k
    return owner


def compose_image(rng: np.random.Generator, pets: list[Source], back: np.ndarray):
    """Pastes `pets` in order on `back` (S, S, 3); returns (image, masks (K, S, S),
    kept pet indices), or None when fewer than 2 pets stay visible enough."""
    size = back.shape[0]
    layers = []
    for pet in pets:
        image, alpha = _scaled_pet(pet, size, rng)
        y = int(rng.integers(size - alpha.shape[0] + 1))
        x = int(rng.integers(size - alpha.shape[1] + 1))
        layers.append((image, alpha, y, x))
    owner = _paste(back.copy(), layers)
    visible = np.bincount(owner[owner >= 0], minlength=len(layers))
    # Removing a hidden pet only uncovers the others, so one pass is enough.
    keep = [k for k, (_, alpha, _, _) in enumerate(layers)
            if visible[k] >= max(MIN_VISIBLE_FRACTION * alpha.sum(),
                                 MIN_AREA_FRACTION * size * size)]
    if len(keep) < PETS_RANGE[0]:
        return None
    canvas = back.copy()
    owner = _paste(canvas, [layers[k] for k in keep])
    masks = owner[None] == np.arange(len(keep))[:, None, None]
    return canvas, masks, keep


# --------------------------------------------------------------------------- images


def compose_one(rng: np.random.Generator, load: Callable[[int], Source], num_sources: int,
                size: int) -> Composite:
    """One composed image from sources `load(0)` ... `load(num_sources - 1)`."""
    if num_sources < 3:
        raise ValueError(f"composing needs at least 3 sources. Received: {num_sources}")
    for _ in range(MAX_TRIES):
        count = int(rng.integers(PETS_RANGE[0], PETS_RANGE[1] + 1))
        back_index = int(rng.integers(num_sources))
        others = np.delete(np.arange(num_sources), back_index)
        picks = rng.choice(others, size=count, replace=len(others) < count)
        back_source = load(back_index)
        pets = [load(int(i)) for i in picks]
        made = compose_image(rng, pets, background(back_source, size, rng))
        if made is not None:
            image, masks, keep = made
            return Composite(image, masks, [0 if pets[k].cat else 1 for k in keep],
                             [pets[k].name for k in keep], back_source.name)
    raise RuntimeError(f"no layout with {PETS_RANGE[0]} visible pets in {MAX_TRIES} tries")


def compose_images(load: Callable[[int], Source], num_sources: int, num: int, seed: int,
                   size: int = DEFAULT_SIZE, split: int = 0,
                   progress: bool = True) -> Iterator[Composite]:
    """Yields `num` composed images; image i is drawn from `default_rng([seed, split, i])`."""
    indices = range(int(num))
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc="composing", unit="img")
    for i in indices:
        yield compose_one(np.random.default_rng([seed, split, i]), load, num_sources, size)


def compose_from_folder(src: str, num: int, seed: int, size: int = DEFAULT_SIZE,
                        split: int = 0, progress: bool = True,
                        paths: list[str] | None = None) -> Iterator[Composite]:
    """`compose_images` over the usable image/trimap pairs of `src` (`images/` +
    `masks/`; `paths` when already checked), each read from disk when picked."""
    paths = paths or usable_sources(src, progress)
    return compose_images(lambda i: load_source(paths[i]), len(paths), num, seed, size,
                          split, progress)


def synthetic_sources(count: int, seed: int, split: int = 0) -> list[Source]:
    """`count` one-pet images of the semantic demo (`datasets.demo_drawing.render`),
    half cats (striped, orange, pointed ears) and half dogs (spotted, pink, floppy ears)."""
    from datasets.demo_drawing import render
    sources = []
    for j in range(count):
        cat = j % 2 == 0
        image, trimap = render(np.random.default_rng([seed, split, 1_000_000 + j]), cat)
        sources.append(Source(f"{'Cat' if cat else 'dog'}_{j:04d}", image,
                              trimap != TRIMAP_BACKGROUND, cat))
    return sources
