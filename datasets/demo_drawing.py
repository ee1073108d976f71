"""Drawing the demo's synthetic pets: one cat or dog on a cluttered background, with its
Oxford trimap (1 pet, 2 background, 3 unknown border band). `datasets.demo` writes them.

The pets are made to be learned fast: cats and dogs differ in several cues at once --
silhouette (cat: round head, pointed ears, slim body, long curled tail; dog: long snout,
floppy dark ears, bulky body, thick legs), texture (stripes vs spots) and colour (warm
orange/gold vs pink/purple) -- while the cluttered backgrounds only use greens, blues and
greys, so the pet stands out. Every choice comes from the generator passed in, so the
same seed draws the same pixels. Bump `datasets.demo.VERSION` when the drawing changes.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from datasets.files import TRIMAP_BACKGROUND, TRIMAP_PET, TRIMAP_UNKNOWN

SIZE_RANGE = (72, 144)  # heights and widths, drawn independently: varied, non-square
COVER_RANGE = (0.18, 0.4)  # fraction of the image the pet covers
_SUBPIXEL = 4  # cv2 `shift`: polygons drawn with 1/16 px precision


# --------------------------------------------------------------------------- colours


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    """Hue in degrees, saturation and value in [0, 1] -> an RGB tuple of ints."""
    r, g, b = colorsys.hsv_to_rgb((h % 360) / 360, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _background_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    # Hues 90-250 (greens, cyans, blues) or greys: far from both coat palettes.
    if rng.random() < 0.3:
        return _rgb(rng.uniform(90, 250), rng.uniform(0, 0.12), rng.uniform(0.2, 0.95))
    return _rgb(rng.uniform(90, 250), rng.uniform(0.2, 0.9), rng.uniform(0.25, 0.95))


def _coat_colours(rng: np.random.Generator, cat: bool):
    """(coat, markings) colours: cats orange/gold with dark stripes, dogs pink/purple
    with dark spots and ears. The hue ranges do not overlap each other or the clutter."""
    if cat:
        h = rng.uniform(24, 50)
        return (_rgb(h, rng.uniform(0.65, 0.95), rng.uniform(0.8, 1.0)),
                _rgb(h, rng.uniform(0.8, 1.0), rng.uniform(0.3, 0.45)))
    h = rng.uniform(290, 340)
    return (_rgb(h, rng.uniform(0.35, 0.65), rng.uniform(0.65, 0.9)),
            _rgb(h, rng.uniform(0.5, 0.8), rng.uniform(0.2, 0.35)))


# --------------------------------------------------------------------------- shapes
# Parts are polygons in a canonical frame: body centred on the origin, about one unit
# long, facing +x, y pointing down. `_place` scales, rotates, flips and moves them.


def _ellipse(cx, cy, ax, ay, angle=0.0, n=28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = ax * np.cos(t), ay * np.sin(t)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _strip(points, width: float) -> np.ndarray:
    """A polyline thickened to `width`: the polygon of a leg or a tail."""
    p = np.asarray(points, dtype=np.float64)
    d = np.gradient(p, axis=0)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    normal *= width / 2 / np.linalg.norm(normal, axis=1, keepdims=True)
    return np.concatenate([p + normal, (p - normal)[::-1]])


def _bezier(p0, p1, p2, n=12) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(p) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t ** 2 * p2


def _cat_parts(rng: np.random.Generator) -> list[tuple[np.ndarray, str]]:
    """Round head with pointed ears, slim body, thin legs, long curled tail."""
    def j(x):  # each cat's proportions differ a little
        return x * rng.uniform(0.9, 1.1)

    a, b, r = j(0.5), j(0.16), j(0.17)
    hx, hy = a + 0.4 * r, -b - 0.3 * r
    parts = [_ellipse(0, 0, a, b), _ellipse(hx, hy, r, 0.95 * r),
             _ellipse(0.85 * a, -0.5 * b, 0.2, 0.1, -30)]
    for phi in np.radians([-112 + rng.uniform(-8, 8), -58 + rng.uniform(-8, 8)]):
        # A pointed ear: a triangle on the head's rim, tip pointing away from its centre.
        ear = [(phi - 0.38, 0.9 * r), (phi, 1.85 * r), (phi + 0.38, 0.9 * r)]
        parts.append(np.array([(hx + d * np.cos(t), hy + d * np.sin(t)) for t, d in ear]))
    leg_len, leg_w = j(0.32), j(0.06)
    for x in (-0.72 * a, -0.45 * a, 0.45 * a, 0.72 * a):
        foot = (x + rng.uniform(-0.04, 0.04), b + leg_len)
        parts.append(_strip([(x, 0.3 * b), foot], leg_w))
    curl = rng.uniform(-0.15, 0.15)
    parts.append(_strip(_bezier((-0.9 * a, -0.05), (-a - 0.35, 0.1 + curl),
                                (-a - 0.2 + curl, -0.5 + curl)), j(0.055)))
    coat = [(p, "coat") for p in parts]
    return coat + [(_ellipse(hx + 0.4 * r, hy - 0.1 * r, 0.14 * r, 0.14 * r), "eye")]


def _dog_parts(rng: np.random.Generator) -> list[tuple[np.ndarray, str]]:
    """Bulky body, head with a long snout, floppy dark ears, thick legs, short tail."""
    def j(x):  # each dog's proportions differ a little
        return x * rng.uniform(0.9, 1.1)

    a, b = j(0.45), j(0.26)
    hx, hy, hr = 0.95 * a + 0.06, -b - 0.03, j(0.15)
    parts = [_ellipse(0, 0, a, b), _ellipse(0.8 * a, -0.6 * b, 0.13, 0.13),
             _ellipse(hx, hy, 1.05 * hr, hr),
             _ellipse(hx + 0.9 * hr, hy + 0.35 * hr, j(0.16), j(0.075))]
    leg_len, leg_w = j(0.24), j(0.11)
    for x in (-0.7 * a, -0.4 * a, 0.4 * a, 0.7 * a):
        foot = (x + rng.uniform(-0.03, 0.03), b + leg_len)
        parts.append(_strip([(x, 0.4 * b), foot], leg_w))
    parts.append(_strip([(-0.9 * a, -0.2 * b), (-a - 0.1, -b - j(0.12))], j(0.08)))
    coat = [(p, "coat") for p in parts]
    nose = hx + 0.9 * hr + 0.14
    dark = [_ellipse(hx - 0.5 * hr, hy + 0.55 * hr, 0.065, j(0.16), 25),
            _ellipse(nose, hy + 0.3 * hr, 0.04, 0.035)]
    eye = _ellipse(hx + 0.35 * hr, hy - 0.3 * hr, 0.025, 0.025)
    return coat + [(p, "dark") for p in dark] + [(eye, "eye")]


def _spots(rng: np.random.Generator) -> list[np.ndarray]:
    """Dark spots scattered over a dog's body (canonical frame)."""
    n = rng.integers(4, 9)
    return [_ellipse(rng.uniform(-0.4, 0.4), rng.uniform(-0.2, 0.2), r,
                     r * rng.uniform(0.7, 1)) for r in rng.uniform(0.04, 0.09, size=n)]


def _fill(canvas: np.ndarray, polys, colour, matrix: np.ndarray) -> None:
    # One call per polygon: a single fillPoly call XORs the overlaps (even-odd rule).
    for p in polys:
        pts = (p @ matrix[:, :2].T + matrix[:, 2]) * (1 << _SUBPIXEL)
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], colour, shift=_SUBPIXEL)


def _place(rng: np.random.Generator, parts, h: int, w: int) -> np.ndarray:
    """The 2x3 affine matrix (canonical -> pixels) that sizes the pet to cover a random
    fraction of the image, with a random flip, tilt and position."""
    polys = [p for p, _ in parts]
    probe = np.zeros((400, 400), np.uint8)  # 100 px per unit: measures the pet's area
    _fill(probe, polys, 1, np.array([[100.0, 0, 200], [0, 100.0, 200]]))
    area = probe.sum() / 100.0 ** 2
    scale = np.sqrt(rng.uniform(*COVER_RANGE) * h * w / area)
    theta, flip = np.radians(rng.uniform(-15, 15)), rng.choice([-1.0, 1.0])
    c, s = np.cos(theta), np.sin(theta)
    lin = scale * np.array([[c, -s], [s, c]]) @ np.diag([flip, 1.0])
    pts = np.concatenate(polys) @ lin.T
    # Cap the size so that at most a little of a long pet is cut off by the border.
    lin *= min(1.0, 1.1 * w / np.ptp(pts[:, 0]), 1.1 * h / np.ptp(pts[:, 1]))
    pts = np.concatenate(polys) @ lin.T
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    # A pet larger than the image is centred with jitter and so cut at the border.
    centre = [rng.uniform(-lo[k], size - hi[k]) if hi[k] - lo[k] < size
              else (size - hi[k] - lo[k]) / 2 + rng.uniform(-0.1, 0.1) * size
              for k, size in enumerate((w, h))]
    return np.concatenate([lin, np.array(centre)[:, None]], axis=1)


# --------------------------------------------------------------------------- drawing


def _draw_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A plain colour under 8-20 random rectangles, circles, ellipses and lines."""
    image = np.empty((h, w, 3), np.uint8)
    image[:] = _background_colour(rng)
    for _ in range(rng.integers(8, 21)):
        colour, kind = _background_colour(rng), rng.integers(4)
        x, y = int(rng.integers(w)), int(rng.integers(h))
        size = int(rng.uniform(0.05, 0.4) * min(h, w)) + 2
        if kind == 0:
            corner = (x + int(rng.uniform(0.5, 2) * size), y + size)
            cv2.rectangle(image, (x, y), corner, colour, -1)
        elif kind == 1:
            cv2.circle(image, (x, y), size // 2, colour, -1)
        elif kind == 2:
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(image, (x, y), (size, size // 3), angle, 0, 360, colour, -1)
        else:
            end = (int(rng.integers(w)), int(rng.integers(h)))
            cv2.line(image, (x, y), end, colour, int(rng.integers(1, 5)))
    return image


def _coat(rng: np.random.Generator, cat: bool, h: int, w: int, matrix: np.ndarray, colours):
    """The pet's fur over the whole image: cats striped across the body, dogs spotted."""
    coat, marks = colours
    fur = np.empty((h, w, 3), np.uint8)
    fur[:] = coat
    if cat:
        # Stripes are drawn in the canonical frame so they follow the body's tilt and scale.
        inv = cv2.invertAffineTransform(matrix)
        ys, xs = np.mgrid[0:h, 0:w]
        u = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
        v = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
        period, wobble = rng.uniform(0.08, 0.12), rng.uniform(0, 0.03)
        phase = 2 * np.pi * (u + wobble * np.sin(12 * v)) / period
        fur[np.sin(phase + rng.uniform(0, 2 * np.pi)) > 0.35] = marks
    else:
        _fill(fur, _spots(rng), marks, matrix)
    return fur


def _trimap(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Oxford-style trimap: the pet's border becomes a 2-3 px unknown band."""
    inner = cv2.erode(mask, np.ones((3, 3), np.uint8))
    grow = int(rng.integers(1, 3))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    outer = cv2.dilate(mask, disc)
    trimap = np.full(mask.shape, TRIMAP_BACKGROUND, np.uint8)
    trimap[outer > 0] = TRIMAP_UNKNOWN
    trimap[inner > 0] = TRIMAP_PET
    return trimap


def render(rng: np.random.Generator, cat: bool) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic example: `(image, trimap)`, (H, W, 3) uint8 RGB and (H, W) uint8
    holding 1 (pet), 2 (background), 3 (unknown), with H and W in `SIZE_RANGE`."""
    h, w = (int(x) for x in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, size=2))
    image = _draw_background(rng, h, w)
    parts = (_cat_parts if cat else _dog_parts)(rng)
    matrix = _place(rng, parts, h, w)
    colours = _coat_colours(rng, cat)
    mask = np.zeros((h, w), np.uint8)
    _fill(mask, [p for p, _ in parts], 1, matrix)
    pet = _coat(rng, cat, h, w, matrix, colours)
    _fill(pet, [p for p, role in parts if role == "dark"], colours[1], matrix)
    _fill(pet, [p for p, role in parts if role == "eye"], (20, 20, 20), matrix)
    image[mask > 0] = pet[mask > 0]
    if rng.random() < 0.5:  # soften some edges, as a camera would
        image = cv2.GaussianBlur(image, (3, 3), 0)
    noise = rng.normal(0, rng.uniform(2, 6), size=image.shape)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return image, _trimap(rng, mask)
