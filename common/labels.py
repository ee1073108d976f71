"""The classes every part of the project shares: names, colours, the ignore label.

A run learns one class set, a `Classes`: its names in id order (id 0 first), the
colour each is drawn in, the value its mask files give pixels to leave out, and how
its masks store the classes (`encoding`). The pets are `PETS`, the default:

    0 background, 1 cat, 2 dog, and IGNORE_LABEL (255) for the trimap's unknown
    border and for the padding around an image smaller than the crop.

Another dataset brings its own in a `classes.json` (`datasets.classes`), which
`Classes.from_json` reads and config.json records (`to_json`), so test.py and draw.py
name and colour what the run learned.

In memory a label is always a class id or IGNORE_LABEL: the readers map a mask file's
own ignore value to it, so the losses and metrics of `models` know one ignore label
whatever the dataset. SOLO, which finds objects rather than labelling pixels, has the
same pet classes without background (`INSTANCE_CLASSES`: 0 cat, 1 dog).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

IGNORE_LABEL = 255
CLASS_NAMES = ("background", "cat", "dog")
NUM_CLASSES = len(CLASS_NAMES)
INSTANCE_CLASSES = CLASS_NAMES[1:]

# RGB colours of the labels in overlays: background stays uncoloured, the ignored
# border grey.
CLASS_COLOURS = {1: (255, 140, 0), 2: (30, 144, 255)}
IGNORE_COLOUR = (128, 128, 128)
# RGB colours of instances, one after the other (matplotlib's tab10, less its grey).
INSTANCE_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                    (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34),
                    (23, 190, 207))
# Default colours of classes 1, 2, ...: the pets' two, then tab10's others.
CLASS_PALETTE = (CLASS_COLOURS[1], CLASS_COLOURS[2]) + tuple(
    c for c in INSTANCE_PALETTE if c not in ((31, 119, 180), (255, 127, 14)))

# How a mask file stores the classes: `ids`, each pixel is a class id (or the ignore
# value); `oxford_trimap`, 1 object, 2 background, 3 unknown, the object's class
# read from the case of the file name (`datasets.files.is_cat`).
ENCODINGS = ("ids", "oxford_trimap")


def default_colours(num_classes: int) -> tuple:
    """Class 0 (background) uncoloured, then `CLASS_PALETTE` in turn; past its end,
    hues a golden angle apart, so even many classes differ from their neighbours."""
    colours = [None]
    for i in range(1, num_classes):
        if i <= len(CLASS_PALETTE):
            colours.append(CLASS_PALETTE[i - 1])
        else:
            r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95)
            colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return tuple(colours)


@dataclass(frozen=True)
class Classes:
    """A class set: what a dataset's masks mean and what a model's outputs are.

    Args:
        names: class names in id order; id 0 is usually the background.
        colours: an RGB triple per class, or None for a class left uncoloured in
            overlays (and out of the legend); None for all: `default_colours`.
        ignore_label: the mask-file value of pixels no loss or score counts (not a
            class id). Readers turn it into `IGNORE_LABEL` in memory.
        encoding: how mask files store classes (`ENCODINGS`).

    Example:
        >>> shapes = Classes(("background", "square", "disc"))
        >>> shapes.num_classes, shapes.colours[1]
        (3, (255, 140, 0))
    """

    names: tuple
    colours: tuple | None = None
    ignore_label: int = IGNORE_LABEL
    encoding: str = "ids"

    def __post_init__(self):
        names = tuple(str(n) for n in self.names)
        try:
            colours = default_colours(len(names)) if self.colours is None else tuple(
                None if c is None else tuple(int(v) for v in c) for c in self.colours)
        except (TypeError, ValueError):
            raise ValueError(f"colours are [R, G, B] triples of 0-255, or null for "
                             f"uncoloured. Received: {self.colours}") from None
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "colours", colours)
        self.check()

    def check(self) -> None:
        """Raises a ValueError saying what is wrong with the class set."""
        n = len(self.names)
        if not 1 <= n <= IGNORE_LABEL:
            raise ValueError(f"a class set needs 1 to {IGNORE_LABEL} class names (ids "
                             f"must fit a one-byte mask). Received: {n}")
        if len(set(self.names)) != n or not all(self.names):
            raise ValueError(f"class names must be distinct and non-empty. Received: "
                             f"{list(self.names)}")
        if len(self.colours) != n:
            raise ValueError(f"give one colour per class ({n}), or none. Received: "
                             f"{len(self.colours)} colours")
        for c in self.colours:
            if c is not None and (len(c) != 3 or not all(0 <= v <= 255 for v in c)):
                raise ValueError(f"a colour is [R, G, B] with values 0-255 (or null "
                                 f"for uncoloured). Received: {list(c)}")
        if not n <= int(self.ignore_label) <= 255:
            raise ValueError(f"the ignore label must be a mask value that is no class "
                             f"id: {n}-255 for {n} classes. Received: {self.ignore_label}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}. "
                             f"Received: {self.encoding!r}")
        if self.encoding == "oxford_trimap" and n != 3:
            raise ValueError(f"oxford_trimap masks give 3 classes (background, the "
                             f"class of capitalised file names, the class of the "
                             f"others). Received: {n} names")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def overlay_colours(self) -> dict:
        """{label: RGB} of what overlays colour: the coloured classes, and the
        ignored pixels grey."""
        coloured = {i: c for i, c in enumerate(self.colours) if c is not None}
        return {**coloured, IGNORE_LABEL: IGNORE_COLOUR}

    def describe(self) -> str:
        """One line naming every class by id, e.g. `0 background, 1 cat, 2 dog`."""
        return ", ".join(f"{i} {name}" for i, name in enumerate(self.names))

    # === JSON ===

    def to_json(self) -> dict:
        """The `classes.json` form (and config.json's `classes`)."""
        return {"names": list(self.names),
                "colours": [None if c is None else list(c) for c in self.colours],
                "ignore_label": int(self.ignore_label), "encoding": self.encoding}

    @classmethod
    def from_json(cls, obj) -> "Classes":
        """A class set from `to_json`'s dict; only `names` is required, a missing
        field takes its default. Raises ValueError naming what is wrong."""
        if not isinstance(obj, dict) or not isinstance(obj.get("names"), list):
            raise ValueError('expected {"names": ["background", ...], "colours": '
                             '[...], "ignore_label": 255, "encoding": "ids"} (only '
                             '"names" is required)')
        unknown = set(obj) - {"names", "colours", "ignore_label", "encoding"}
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}; the fields are "
                             f"names, colours, ignore_label and encoding")
        ignore = obj.get("ignore_label", IGNORE_LABEL)
        if not isinstance(ignore, int) or isinstance(ignore, bool):
            raise ValueError(f"ignore_label is a whole number. Received: {ignore!r}")
        return cls(tuple(obj["names"]), obj.get("colours"), ignore,
                   obj.get("encoding", "ids"))

    @classmethod
    def generic(cls, num_classes: int) -> "Classes":
        """`class_0`, `class_1`, ...: for a model whose class names were not recorded."""
        return cls(tuple(f"class_{i}" for i in range(num_classes)))


PETS = Classes(CLASS_NAMES, (None, CLASS_COLOURS[1], CLASS_COLOURS[2]), IGNORE_LABEL,
               "oxford_trimap")
PET_INSTANCES = Classes(INSTANCE_CLASSES)  # SOLO's: no background class
