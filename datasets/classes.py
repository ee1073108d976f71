"""A dataset's class set: the optional `classes.json` of its folder.

    data/shapes/classes.json        (or data/shapes/train/classes.json)
    {"names": ["background", "square", "disc", "triangle", "star"],
     "colours": [null, [255, 140, 0], [30, 144, 255], [44, 160, 44], [214, 39, 40]],
     "ignore_label": 255,
     "encoding": "ids"}

Only `names` is required: the class names in id order. `colours` (RGB, or null for
uncoloured) default to `common.labels.default_colours`; `ignore_label`, the mask
value of pixels to leave out, defaults to 255; `encoding` says how masks store the
classes: `ids` (each pixel a class id, the default) or `oxford_trimap`. A folder
without the file is the Oxford pets (`common.labels.PETS`: trimaps, the species from
the file name's case), so the pets need none.

The file is looked up in the split folder (`train/`), then in its parent (the dataset
root), so one file at the root serves every split.
"""

from __future__ import annotations

import json
import os

from common.files import atomic_path
from common.labels import PETS, Classes
from datasets.files import DataError

CLASSES_FILE = "classes.json"


def classes_file(folder: str) -> str | None:
    """The `classes.json` that applies to a split folder: its own, else its
    parent's; None when neither has one."""
    for where in (folder, os.path.normpath(os.path.join(folder, os.pardir))):
        path = os.path.join(where, CLASSES_FILE)
        if os.path.isfile(path):
            return path
    return None


def read_classes(folder: str) -> Classes:
    """The class set of a split folder (`classes_file`), `PETS` without a file;
    raises `DataError` naming the file and what is wrong with it."""
    path = classes_file(folder)
    if path is None:
        return PETS
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
        return Classes.from_json(obj)
    except OSError as e:
        raise DataError(path, f"cannot be read ({e.strerror or e})") from None
    except ValueError as e:  # bad JSON, or a class set that cannot work
        raise DataError(path, f"{e}; see docs/own-data.md") from None


def classes_of_paths(paths) -> Classes:
    """The class set of image files `SPLIT/images/NAME.ext`: their split's."""
    paths = list(paths)
    if not paths:
        return PETS
    return read_classes(os.path.dirname(os.path.dirname(os.path.abspath(paths[0]))))


def write_classes(folder: str, classes: Classes) -> str:
    """Writes `folder/classes.json` for `classes`, a field per line as a person
    would write it; returns its path."""
    path = os.path.join(folder, CLASSES_FILE)
    fields = [f'  "{key}": {json.dumps(value)}' for key, value in classes.to_json().items()]
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(fields) + "\n}\n")
    return path
