"""Downloads the Oxford-IIIT Pet release and prepares `ROOT/{train,test}/{images,masks}`.

    python -m datasets.download --root data/catdog              # the article's split
    python -m datasets.download --root data/catdog --split official

The article used 4,817 of the release's images: it dropped broken images and images
with a side over 600 px, then held out a random 10% as test. `--split article` does the
same, seeded and from sorted names so every machine gets the same split (the article's
own split was neither). `--split official` uses the release's `trainval.txt` / `test.txt`.

Steps: fetch both tarballs into `ROOT/downloads/` (resuming a partial download, checking
MD5), extract them safely into a temporary folder under ROOT, pair `images/NAME.jpg`
with `annotations/trimaps/NAME.png`, drop what cannot be used, split, copy the files
unchanged (masks keep the Oxford values 1/2/3), and record it all in `ROOT/prepare.json`.
Without a network, it says where to put the two tarballs by hand.

Fetching and extracting are here, with the command line; choosing, splitting and
writing the pairs are `datasets.prepare`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import io
import logging
import os
import sys
import urllib.error
import urllib.request
from typing import BinaryIO

from datasets.prepare import (SPLITS, PrepareError, check_root, install,  # noqa: F401
                              prepare_options, rerun_command, safe_extract, up_to_date)

log = logging.getLogger(__name__)

BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/"
# MD5 of each tarball of the release (the values torchvision's OxfordIIITPet checks).
CHECKSUMS = {
    "images.tar.gz": "5c4f3ee8e5d25df40f4fd59a7f44e54c",
    "annotations.tar.gz": "95a8c909bbe2e81eed6a22bccdf3f68f",
}
TIMEOUT_S = 30
CHUNK = 1 << 20


class OfflineError(PrepareError):
    """The release could not be fetched: no network, or the connection dropped."""


# --------------------------------------------------------------------------- download


def fetch(url: str, start: int = 0) -> tuple[BinaryIO, int, int | None]:
    """Opens `url`, asking for the bytes from `start` on (the only network code here).

    Returns `(stream, offset, total)`: the stream starts at byte `offset`, which is
    `start` when the server honoured the Range request and 0 when it sent the whole
    file; `total` is the full size when the server said it.
    """
    headers = {"Range": f"bytes={start}-"} if start else {}
    response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=TIMEOUT_S)
    content_range = response.headers.get("Content-Range", "")  # bytes START-END/TOTAL
    if response.status == 206 and content_range.startswith("bytes "):
        span, _, total = content_range[6:].partition("/")
        return response, int(span.split("-")[0]), int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return response, 0, int(length) if length and length.isdigit() else None


def md5sum(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_md5(path: str, expected: str) -> None:
    actual = md5sum(path)
    if actual != expected:
        raise PrepareError(f"{path} has the wrong checksum (MD5 {actual}, expected "
                           f"{expected}): it is damaged or not the official file. "
                           "Delete it and run again to download it afresh.")


def download(url: str, dest: str, md5: str, progress: bool = True) -> str:
    """Downloads `url` to `dest` through `dest.part`, resuming a partial `.part` file.

    Skips the download when `dest` is already there (its checksum is still checked).
    Raises `OfflineError` when the network fails (the `.part` file stays, so a rerun
    resumes) and `PrepareError` on a bad checksum or an HTTP error.
    """
    if os.path.exists(dest):
        _check_md5(dest, md5)
        log.info("found %s (checksum ok), not downloading it again", dest)
        return dest
    part = dest + ".part"
    start = os.path.getsize(part) if os.path.exists(part) else 0
    try:
        stream, offset, total = fetch(url, start)
    except urllib.error.HTTPError as e:
        e.close()  # the error holds the open response
        if e.code != 416 or not start:  # 416: nothing left after `start`, i.e. all there
            raise PrepareError(f"{url}: the server answered HTTP {e.code} "
                               f"{e.reason}") from None
        stream, offset, total = None, start, start  # an empty stream below
    except (OSError, http.client.HTTPException) as e:  # URLError, timeout, DNS, refused
        raise OfflineError(str(getattr(e, "reason", e))) from None
    if offset not in (0, start):
        raise PrepareError(f"{url}: the server sent bytes from {offset}, asked for {start}")
    if start and offset == 0:
        log.info("the server ignored the resume request; downloading %s from the start",
                 os.path.basename(dest))
    from tqdm import tqdm
    with contextlib.closing(io.BytesIO() if stream is None else stream) as stream, \
            open(part, "ab" if offset else "wb") as out, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=os.path.basename(dest), disable=not progress) as bar:
        while True:
            try:
                chunk = stream.read(CHUNK)
            except (OSError, http.client.HTTPException) as e:
                raise OfflineError(f"the connection dropped ({e}); {out.tell()} bytes "
                                   f"are kept in {part}") from None
            if not chunk:
                break
            out.write(chunk)
            bar.update(len(chunk))
    os.replace(part, dest)
    _check_md5(dest, md5)
    return dest


def _offline_message(reason: str, downloads: str, rerun: str) -> str:
    lines = [f"Cannot download the Oxford-IIIT Pet release: you seem to be offline "
             f"({reason}).", "Download these two files on a machine with a network:"]
    lines += [f"  {BASE_URL}{name}" for name in CHECKSUMS]
    lines.append("and put them exactly here:")
    for name in CHECKSUMS:
        path = os.path.join(os.path.abspath(downloads), name)
        lines.append(f"  {path}" + ("  (already there)" if os.path.exists(path) else ""))
    lines += ["then run again, to go on from them:", f"  {rerun}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- extract


def prepare(root: str, split: str = "article", seed: int = 0, test_fraction: float = 0.1,
            max_side: int | None = 600, downloads: str | None = None,
            progress: bool = True) -> dict:
    """Downloads the release and writes `root/{train,test}/{images,masks}`.

    Args:
        root: the dataset folder to fill (e.g. `data/catdog`).
        split: "article" (seeded random `test_fraction` as test) or "official"
            (the release's trainval.txt / test.txt).
        seed, test_fraction: the article split's seed and test share.
        max_side: drop images with a side longer than this, as the article did;
            None keeps them all (`--keep-large`).
        downloads: where the tarballs go; default `root/downloads`.
        progress: show progress bars.

    Returns:
        The summary also written to `root/prepare.json`: options, counts, the
        dropped files with the reason for each, the test names and the checksums.
        When `prepare.json` already matches the options, nothing is done.
    """
    check_root(root, split, test_fraction, max_side)
    options = prepare_options(split, seed, test_fraction, max_side)
    done = up_to_date(root, options)
    if done is not None:
        log.info("%s is already prepared with these options (see %s); nothing to do",
                 root, os.path.join(root, "prepare.json"))
        return done
    rerun = rerun_command(root, split, seed, test_fraction, max_side, downloads)
    downloads = downloads or os.path.join(root, "downloads")
    os.makedirs(root, exist_ok=True)
    os.makedirs(downloads, exist_ok=True)
    try:
        tarballs = [download(BASE_URL + name, os.path.join(downloads, name), md5, progress)
                    for name, md5 in CHECKSUMS.items()]
    except OfflineError as e:
        raise OfflineError(_offline_message(str(e), downloads, rerun)) from None
    return install(root, tarballs, options, CHECKSUMS, progress)


# --------------------------------------------------------------------------- command line


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m datasets.download",
        description="Download the Oxford-IIIT Pet release and prepare "
                    "ROOT/{train,test}/{images,masks} as the article did.")
    p.add_argument("--root", required=True, help="dataset folder to fill, e.g. data/catdog")
    p.add_argument("--split", choices=SPLITS, default="article",
                   help="article: seeded random --test-fraction as test (default); "
                        "official: the release's trainval.txt / test.txt")
    p.add_argument("--seed", type=int, default=0, help="seed of the article split (0)")
    p.add_argument("--test-fraction", type=_fraction, default=0.1,
                   help="share of the kept images held out as test (0.1)")
    p.add_argument("--max-side", type=_positive, default=600,
                   help="drop images with a side longer than this, in pixels (600)")
    p.add_argument("--keep-large", action="store_true",
                   help="keep images of any size (ignores --max-side)")
    p.add_argument("--downloads", default=None,
                   help="folder for the two tarballs (default ROOT/downloads); put them "
                        "there by hand to prepare without a network")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("options: %s", vars(args))
    try:
        summary = prepare(args.root, args.split, args.seed, args.test_fraction,
                          None if args.keep_large else args.max_side, args.downloads,
                          progress=not args.no_progress)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = summary["counts"]
    print(f"{args.root}: {c['train']} train, {c['test']} test, {c['dropped']} dropped "
          f"of {c['found']} (details in {os.path.join(args.root, 'prepare.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
