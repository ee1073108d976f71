"""Preparing the dataset from the release: which pairs to keep, the split, and writing
`ROOT/{train,test}/{images,masks}` with `ROOT/prepare.json`.

`prepare` runs every step of `python -m datasets.download` (see there for the steps);
the fetching and the safe extraction it calls are `datasets.download`'s. A pair is kept
only when the project's own loaders read it (`datasets.files`), so what is written is
what training can read, and `prepare.json` records why each dropped file was dropped.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import tarfile
import tempfile

import numpy as np

from common.files import write_json
from datasets.files import IMAGE_EXTENSIONS, DataError, image_name, load_image, load_trimap

log = logging.getLogger(__name__)

SPLITS = ("article", "official")


class PrepareError(RuntimeError):
    """Preparing the dataset failed; the message says what to do about it."""


# --------------------------------------------------------------------------- select


def safe_extract(tar_path: str, dest: str) -> None:
    """Extracts the regular files of a tarball into `dest`.

    Refuses (PrepareError, nothing written) a member with an absolute path or a `..`
    part, which would land outside `dest`; links and special files are skipped.
    """
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        for m in members:
            parts = m.name.replace("\\", "/").split("/")
            if m.name.startswith(("/", "\\")) or os.path.isabs(m.name) or ".." in parts:
                raise PrepareError(f"{tar_path}: refusing the unsafe member {m.name!r}, "
                                   "which would be written outside the extraction folder")
        for m in members:
            if not m.isfile():
                continue
            path = os.path.join(dest, *[p for p in m.name.split("/") if p not in ("", ".")])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with tar.extractfile(m) as src, open(path, "wb") as out:
                shutil.copyfileobj(src, out)


def find_pairs(extract_dir: str) -> dict[str, tuple[str, str]]:
    """NAME -> (image path, trimap path) for `images/NAME.jpg` (and .jpeg/.png).

    Leaves out the `._NAME` AppleDouble files and the non-image files (`.mat`) that
    the release ships. The trimap path may not exist; `check_pair` reports that.
    """
    images_dir = os.path.join(extract_dir, "images")
    trimaps_dir = os.path.join(extract_dir, "annotations", "trimaps")
    pairs = {}
    for f in sorted(os.listdir(images_dir)):
        if f.startswith("._") or os.path.splitext(f)[1].lower() not in IMAGE_EXTENSIONS:
            continue
        pairs[image_name(f)] = (os.path.join(images_dir, f),
                                os.path.join(trimaps_dir, image_name(f) + ".png"))
    return pairs


def check_pair(image_path: str, mask_path: str,
               max_side: int | None) -> tuple[str, str] | None:
    """Why a pair is dropped, as `(reason, detail)`, or None to keep it."""
    try:
        h, w = load_image(image_path).shape[:2]
    except DataError as e:
        return "broken image", e.problem
    if not os.path.exists(mask_path):
        return "no trimap", "annotations/trimaps has no mask for it"
    try:
        mask_shape = load_trimap(mask_path).shape
    except DataError as e:
        return "broken trimap", e.problem
    if mask_shape != (h, w):
        mh, mw = mask_shape
        return "trimap size differs", f"image {w}x{h}, trimap {mw}x{mh}"
    if max_side is not None and max(h, w) > max_side:
        return f"side over {max_side} px", f"{w}x{h}"
    return None


# --------------------------------------------------------------------------- split


def split_article(names: list[str], seed: int, test_fraction: float) -> tuple[list, list]:
    """A seeded random `test_fraction` of `names` as test, the rest as train."""
    names = sorted(names)
    n_test = min(max(round(len(names) * test_fraction), 1), len(names) - 1)
    order = np.random.default_rng(seed).permutation(len(names))
    test = {names[i] for i in order[:n_test]}
    return [n for n in names if n not in test], sorted(test)


def read_list(path: str) -> set[str]:
    """NAMEs of an Oxford list file (`NAME CLASS SPECIES BREED`; `#` lines skipped)."""
    if not os.path.exists(path):
        raise PrepareError(f"{path} is missing from annotations.tar.gz; "
                           "--split official needs it")
    with open(path, encoding="utf-8") as f:
        return {ln.split()[0] for ln in f if ln.strip() and not ln.startswith("#")}


def split_official(names: list[str], annotations_dir: str) -> tuple[list, list, list]:
    """(train, test, unlisted): `trainval.txt` -> train, `test.txt` -> test."""
    trainval = read_list(os.path.join(annotations_dir, "trainval.txt"))
    test = read_list(os.path.join(annotations_dir, "test.txt"))
    names = sorted(names)
    return ([n for n in names if n in trainval], [n for n in names if n in test],
            [n for n in names if n not in trainval and n not in test])


# --------------------------------------------------------------------------- prepare


def prepare_options(split: str, seed: int, test_fraction: float, max_side: int | None) -> dict:
    article = split == "article"  # the seed and the fraction only matter there
    return {"split": split, "seed": seed if article else None,
            "test_fraction": test_fraction if article else None, "max_side": max_side}


def _count(folder: str) -> int:
    return len(os.listdir(folder)) if os.path.isdir(folder) else -1


def up_to_date(root: str, options: dict) -> dict | None:
    """The summary in `ROOT/prepare.json` when it has these options and the files are
    all still there; None when the folder must be (re)built."""
    try:
        with open(os.path.join(root, "prepare.json"), encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    if summary.get("options") != options:
        return None
    for part in ("train", "test"):
        n = summary.get("counts", {}).get(part, -2)  # -2: never matches a file count
        if any(_count(os.path.join(root, part, d)) != n for d in ("images", "masks")):
            return None
    return summary


def rerun_command(root, split, seed, test_fraction, max_side, downloads) -> str:
    args = ["python", "-m", "datasets.download", "--root", root]
    if split != "article":
        args += ["--split", split]
    if split == "article" and seed != 0:
        args += ["--seed", str(seed)]
    if split == "article" and test_fraction != 0.1:
        args += ["--test-fraction", str(test_fraction)]
    if max_side is None:
        args.append("--keep-large")
    elif max_side != 600:
        args += ["--max-side", str(max_side)]
    if downloads is not None:
        args += ["--downloads", downloads]
    return " ".join(shlex.quote(a) for a in args)


def _select(extract: str, options: dict, progress: bool) -> tuple[dict, list[dict]]:
    """Checks every pair; returns ({"train": names, "test": names}, dropped)."""
    pairs = find_pairs(extract)
    items = pairs.items()
    if progress:
        from tqdm import tqdm
        items = tqdm(items, desc="checking images", unit="img", leave=False)
    dropped, kept = [], []
    for name, (image, mask) in items:
        why = check_pair(image, mask, options["max_side"])
        if why is None:
            kept.append(name)
        else:
            dropped.append({"file": os.path.relpath(image, extract).replace(os.sep, "/"),
                            "reason": why[0], "detail": why[1]})
    if len(kept) < 2:
        raise PrepareError(f"only {len(kept)} usable image(s) in the release; "
                           "need 2 or more")
    if options["split"] == "article":
        train, test = split_article(kept, options["seed"], options["test_fraction"])
    else:
        train, test, unlisted = split_official(kept, os.path.join(extract, "annotations"))
        dropped += [{"file": f"images/{os.path.basename(pairs[n][0])}",
                     "reason": "not in trainval.txt or test.txt", "detail": ""}
                    for n in unlisted]
    log.info("found %d images, kept %d, dropped %d", len(pairs), len(kept), len(dropped))
    for reason in sorted({d["reason"] for d in dropped}):
        log.info("  dropped %d: %s", sum(d["reason"] == reason for d in dropped), reason)
    return {"train": train, "test": test, "found": len(pairs)}, dropped


def _write(tmp: str, extract: str, split: dict) -> None:
    """Copies each pair, byte for byte and keeping its name, into `tmp/out/PART`."""
    pairs = find_pairs(extract)
    for part in ("train", "test"):
        for d in ("images", "masks"):
            os.makedirs(os.path.join(tmp, "out", part, d))
        for name in split[part]:
            image, mask = pairs[name]
            shutil.copyfile(image, os.path.join(tmp, "out", part, "images",
                                                os.path.basename(image)))
            shutil.copyfile(mask, os.path.join(tmp, "out", part, "masks", name + ".png"))


def _install(root: str, tmp: str, summary: dict) -> None:
    """Moves the new train/test folders into ROOT (replacing ours), then prepare.json."""
    json_path = os.path.join(root, "prepare.json")
    if os.path.exists(json_path):
        os.remove(json_path)  # first, so an interrupted install is never taken as done
    for part in ("train", "test"):
        dest = os.path.join(root, part)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(os.path.join(tmp, "out", part), dest)
    write_json(json_path, summary)


def check_root(root: str, split: str, test_fraction: float,
               max_side: int | None) -> None:
    """Fails on arguments that cannot work, and on a ROOT this module did not fill."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: {split!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1). Received: {test_fraction}")
    if max_side is not None and max_side <= 0:
        raise ValueError(f"max_side must be positive or None. Received: {max_side}")
    if not os.path.exists(os.path.join(root, "prepare.json")):
        for part in ("train", "test"):  # never overwrite data this script did not write
            if _count(os.path.join(root, part)) > 0:
                raise PrepareError(f"{os.path.join(root, part)} already exists and was "
                                   "not written by this script; move it away or pick "
                                   "another --root")


def install(root: str, tarballs: list[str], options: dict, checksums: dict,
            progress: bool = True) -> dict:
    """Extracts the downloaded `tarballs`, selects and splits the pairs, and installs
    `root/{train,test}` and `root/prepare.json`; returns the summary."""
    tmp = tempfile.mkdtemp(prefix=".prepare-", dir=root)
    try:
        extract = os.path.join(tmp, "extract")
        for path in tarballs:
            safe_extract(path, extract)
        names, dropped = _select(extract, options, progress)
        _write(tmp, extract, names)
        counts = {"found": names["found"], "kept": len(names["train"]) + len(names["test"]),
                  "dropped": len(dropped), "train": len(names["train"]),
                  "test": len(names["test"])}
        summary = {"options": options, "counts": counts,
                   "dropped_by_reason": {r: sum(d["reason"] == r for d in dropped)
                                         for r in sorted({d["reason"] for d in dropped})},
                   "dropped": dropped, "test_names": names["test"],
                   "md5": dict(checksums)}
        _install(root, tmp, summary)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %s: %d train, %d test", root, counts["train"], counts["test"])
    return summary
