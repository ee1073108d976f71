"""Report the unusable files of a dataset folder, without training; and
`usable_images`, the same check train.py and test.py run first.

    python -m datasets.check data/catdog/train

Decodes every image and mask exactly as training would and prints the classes (from
the folder's `classes.json`, else the pets'), one line per bad file (what is wrong
with it: e.g. a mask value that is no class), masks without an image, and a count.
Exit status 0 when every file is usable, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

import logging

from common.labels import Classes
from datasets.classes import classes_file, read_classes
from datasets.data import check_files
from datasets.files import DataError, list_images, orphan_masks, settle_bad_files


def usable_images(data_dir: str, skip_bad: bool, with_label: bool = True,
               classes: Classes | None = None) -> tuple[list[str], list[str]]:
    """Every usable image of `data_dir`, after decoding each pair once, and the
    problems (one `"FILE: what is wrong"` line each) of the files left out; masks
    are read as `classes` (None: the folder's) encode them.

    Bad files stop the run with the full list (`DatasetError`) unless `skip_bad`,
    which logs them and goes on with the rest.
    """
    paths = list_images(data_dir)
    good, problems = check_files(paths, with_label, progress=len(paths) > 200,
                                         classes=classes or read_classes(data_dir))
    for orphan in orphan_masks(data_dir) if with_label else []:
        logging.warning("%s: mask has no image; ignored", orphan)
    settle_bad_files(data_dir, problems, len(paths), skip_bad)
    if not good:
        raise FileNotFoundError(f"no usable image in {data_dir}")
    return good, [str(p) for p in problems]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", help="folder with images/ and masks/ (e.g. data/catdog/train)")
    p.add_argument("--no-label", action="store_true", help="check images only")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        paths = list_images(args.data_dir)
        classes = read_classes(args.data_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not args.no_label:
        source = classes_file(args.data_dir)
        masks = "class ids" if classes.encoding == "ids" else "Oxford trimaps"
        print(f"classes: {classes.describe()} (" + (f"from {source}; masks of {masks})"
              if source else "no classes.json: the pets, from Oxford trimaps)"))
    good, problems = check_files(paths, not args.no_label, progress=True, classes=classes)
    orphans = [] if args.no_label else orphan_masks(args.data_dir)
    for p in problems:
        print(f"BAD   {p}")
    for path in orphans:
        print(f"WARN  {path}: mask has no image; it is ignored")
    print(f"{len(good)} usable, {len(problems)} bad of {len(paths)} images in "
          f"{args.data_dir}" + (f"; {len(orphans)} mask(s) without image" if orphans else ""))
    if problems:
        print("Training stops on bad files; fix or remove them, or train with --skip-bad.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
