"""Tests for datasets.download on tiny tarballs shaped like the real release (no network)."""

import hashlib
import io
import json
import os
import tarfile
import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from datasets import data
from datasets import download as dl
from datasets import prepare as prep

# 6 cats (capitalised) and 6 dogs: all usable, 16x12 pixels.
GOOD = [f"Abyssinian_{i}" for i in range(1, 7)] + [f"beagle_{i}" for i in range(1, 7)]
BROKEN = "Bombay_9"     # a JPEG cut in half: load_image raises DataError
LARGE = "boxer_7"       # 601 px wide: over the article's 600 px limit
UNLISTED = "beagle_6"   # in neither trainval.txt nor test.txt
TRAINVAL = ["Abyssinian_1", "Abyssinian_2", "Abyssinian_3", "beagle_1", "beagle_2",
            "beagle_3", BROKEN]
TEST = ["Abyssinian_4", "Abyssinian_5", "Abyssinian_6", "beagle_4", "beagle_5", LARGE]


def _jpeg(w, h, seed):
    pixels = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()


def _trimap(w, h):
    arr = np.full((h, w), 2, dtype=np.uint8)  # background, a pet in the middle, a border
    arr[h // 4:3 * h // 4, w // 4:3 * w // 4] = 3
    arr[h // 3:2 * h // 3, w // 3:2 * w // 3] = 1
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, "PNG")
    return buf.getvalue()


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _listing(names):
    return "".join(f"{n} 1 1 1\n" for n in names).encode()


@pytest.fixture
def release(tmp_path):
    """Both tarballs (with the release's junk files) and the bytes put in them."""
    images = {f"images/{n}.jpg": _jpeg(16, 12, i) for i, n in enumerate(GOOD)}
    images[f"images/{BROKEN}.jpg"] = _jpeg(16, 12, 99)[:200]
    images[f"images/{LARGE}.jpg"] = _jpeg(601, 8, 98)
    images["images/._Abyssinian_1.jpg"] = b"\x00\x05\x16\x07AppleDouble junk"
    images["images/Abyssinian_100.mat"] = b"MATLAB 5.0 MAT-file"
    annotations = {f"annotations/trimaps/{n}.png": _trimap(16, 12) for n in GOOD + [BROKEN]}
    annotations[f"annotations/trimaps/{LARGE}.png"] = _trimap(601, 8)
    annotations["annotations/trimaps/._Abyssinian_1.png"] = b"junk"
    annotations["annotations/trainval.txt"] = b"#Image CLASS-ID SPECIES BREED ID\n" + \
        _listing(TRAINVAL)
    annotations["annotations/test.txt"] = _listing(TEST)
    src = tmp_path / "src"
    src.mkdir()
    return {"images.tar.gz": _tar(src / "images.tar.gz", images),
            "annotations.tar.gz": _tar(src / "annotations.tar.gz", annotations),
            "members": {**images, **annotations}}


@pytest.fixture
def net(monkeypatch, release):
    """A fake network serving the tiny tarballs, whose MD5s become the expected ones."""
    blobs = {name: release[name].read_bytes() for name in dl.CHECKSUMS}
    monkeypatch.setattr(dl, "CHECKSUMS",
                        {n: hashlib.md5(b).hexdigest() for n, b in blobs.items()})
    calls = []

    def fake_fetch(url, start=0):
        calls.append((url, start))
        blob = blobs[url.rsplit("/", 1)[1]]
        return io.BytesIO(blob[start:]), start, len(blob)

    monkeypatch.setattr(dl, "fetch", fake_fetch)
    return calls


def _names(folder):
    return sorted(data.image_name(f) for f in os.listdir(folder))


def test_prepare_drops_broken_and_large_and_writes_readable_layout(tmp_path, release, net):
    root = tmp_path / "catdog"
    summary = dl.prepare(str(root), progress=False)

    assert summary["counts"] == {"found": 14, "kept": 12, "dropped": 2, "train": 11,
                                 "test": 1}  # the junk ._ and .mat files are not "found"
    reasons = {d["file"]: d["reason"] for d in summary["dropped"]}
    assert reasons == {f"images/{BROKEN}.jpg": "broken image",
                       f"images/{LARGE}.jpg": "side over 600 px"}
    train, test = _names(root / "train" / "images"), _names(root / "test" / "images")
    assert sorted(train + test) == sorted(GOOD) and not set(train) & set(test)
    assert _names(root / "train" / "masks") == train
    # Copied byte for byte; masks keep the Oxford values 1/2/3.
    name = train[0]
    assert (root / "train" / "images" / f"{name}.jpg").read_bytes() == \
        release["members"][f"images/{name}.jpg"]
    assert (root / "train" / "masks" / f"{name}.png").read_bytes() == \
        release["members"][f"annotations/trimaps/{name}.png"]
    images, labels = data.read_data(str(root / "train"), 64, progress=False)
    assert images.shape == (11, 64, 64, 3) and labels.shape == (11, 64, 64)
    assert set(np.unique(labels)) == {0, 1, 2, data.IGNORE_LABEL}
    # The summary is on disk, the temporary extraction is gone, the tarballs stay.
    assert json.loads((root / "prepare.json").read_text()) == summary
    assert sorted(os.listdir(root)) == ["downloads", "prepare.json", "test", "train"]
    assert sorted(os.listdir(root / "downloads")) == ["annotations.tar.gz", "images.tar.gz"]


def test_keep_large_keeps_the_wide_image(tmp_path, net):
    summary = dl.prepare(str(tmp_path / "catdog"), max_side=None, progress=False)
    assert summary["counts"]["kept"] == 13
    assert [d["reason"] for d in summary["dropped"]] == ["broken image"]


def test_article_split_is_seeded_sorted_and_about_the_fraction():
    names = [f"pet_{i}" for i in range(200)]
    train, test = prep.split_article(names, seed=0, test_fraction=0.1)
    assert len(test) == 20 and len(train) == 180
    assert sorted(train + test) == sorted(names)
    assert prep.split_article(names[::-1], seed=0, test_fraction=0.1) == (train, test)
    assert prep.split_article(names, seed=1, test_fraction=0.1)[1] != test
    assert len(prep.split_article(names, seed=0, test_fraction=0.25)[1]) == 50


def test_official_split_follows_the_lists(tmp_path, net):
    root = tmp_path / "catdog"
    summary = dl.prepare(str(root), split="official", progress=False)
    kept = set(GOOD)
    assert _names(root / "train" / "images") == sorted(kept & set(TRAINVAL))
    assert _names(root / "test" / "images") == sorted(kept & set(TEST))
    assert {d["file"]: d["reason"] for d in summary["dropped"]}[f"images/{UNLISTED}.jpg"] \
        == "not in trainval.txt or test.txt"
    assert summary["options"] == {"split": "official", "seed": None, "test_fraction": None,
                                  "max_side": 600}


def test_rerun_with_same_options_is_a_no_op(tmp_path, net, caplog):
    root = tmp_path / "catdog"
    first = dl.prepare(str(root), progress=False)
    mtime = os.stat(root / "prepare.json").st_mtime_ns
    n_fetches = len(net)
    caplog.set_level("INFO", logger=dl.__name__)
    assert dl.prepare(str(root), progress=False) == first
    assert "nothing to do" in caplog.text
    assert os.stat(root / "prepare.json").st_mtime_ns == mtime and len(net) == n_fetches
    # Other options rebuild the folder, from the tarballs already downloaded.
    other = dl.prepare(str(root), seed=3, test_fraction=0.5, progress=False)
    assert other["counts"]["test"] == 6 and len(net) == n_fetches
    assert len(os.listdir(root / "test" / "images")) == 6


def test_tarballs_put_by_hand_need_no_network(tmp_path, release, net, monkeypatch):
    downloads = tmp_path / "by_hand"
    downloads.mkdir()
    for name in dl.CHECKSUMS:
        (downloads / name).write_bytes(release[name].read_bytes())
    monkeypatch.setattr(dl, "fetch", lambda *a: pytest.fail("must not download"))
    assert dl.main(["--root", str(tmp_path / "catdog"), "--downloads", str(downloads),
                    "--no-progress"]) == 0


def test_existing_train_folder_not_ours_is_refused(tmp_path, net):
    (tmp_path / "catdog" / "train").mkdir(parents=True)
    (tmp_path / "catdog" / "train" / "mine.txt").write_text("keep me")
    with pytest.raises(dl.PrepareError, match="not written by this script"):
        dl.prepare(str(tmp_path / "catdog"), progress=False)
    assert (tmp_path / "catdog" / "train" / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("bad", ["../evil.txt", "images/../../evil.txt", "/tmp/evil.txt"])
def test_path_traversal_member_is_refused(tmp_path, bad):
    tar = _tar(tmp_path / "evil.tar.gz", {"images/ok.jpg": b"ok", bad: b"pwned"})
    dest = tmp_path / "a" / "b"
    with pytest.raises(dl.PrepareError, match="unsafe member"):
        dl.safe_extract(str(tar), str(dest))
    assert not dest.exists()  # checked before anything is written
    assert not (tmp_path / "a" / "evil.txt").exists()


def test_bad_checksum_says_to_delete_and_retry(tmp_path, net, monkeypatch, capsys):
    monkeypatch.setitem(dl.CHECKSUMS, "images.tar.gz", "0" * 32)
    root = tmp_path / "catdog"
    assert dl.main(["--root", str(root), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "wrong checksum" in err and "Delete it and run again" in err
    assert str(root / "downloads" / "images.tar.gz") in err
    assert not (root / "train").exists()


def test_offline_names_the_paths_and_exits_without_traceback(tmp_path, monkeypatch, capsys):
    def no_network(url, start=0):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(dl, "fetch", no_network)
    root = tmp_path / "catdog"
    code = dl.main(["--root", str(root), "--split", "official", "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0
    assert "offline" in err and "Traceback" not in err
    for name in ("images.tar.gz", "annotations.tar.gz"):
        assert str(root / "downloads" / name) in err
        assert dl.BASE_URL + name in err
    assert f"python -m datasets.download --root {root} --split official" in err


def _serve(blob, honour_range=True):
    calls = []

    def fake_fetch(url, start=0):
        calls.append(start)
        offset = start if honour_range else 0
        return io.BytesIO(blob[offset:]), offset, len(blob)

    return fake_fetch, calls


@pytest.mark.parametrize("honour_range", [True, False])
def test_download_resumes_a_partial_file(tmp_path, monkeypatch, honour_range):
    size = 3 * dl.CHUNK + 123  # several chunks, the last one short
    blob = bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8))
    dest = tmp_path / "images.tar.gz"
    # A server that ignores Range must not leave these stale bytes in front.
    stale = blob[:1000] if honour_range else b"x" * 1000
    (tmp_path / "images.tar.gz.part").write_bytes(stale)
    fake_fetch, calls = _serve(blob, honour_range)
    monkeypatch.setattr(dl, "fetch", fake_fetch)
    dl.download("http://x/images.tar.gz", str(dest), hashlib.md5(blob).hexdigest(),
                progress=False)
    assert calls == [1000]
    assert dest.read_bytes() == blob
    assert not (tmp_path / "images.tar.gz.part").exists()


def test_dropped_connection_keeps_the_part_for_a_resume(tmp_path, monkeypatch):
    blob = b"0123456789" * 1000

    class Dropping(io.BytesIO):
        def read(self, n=-1):
            if self.tell():
                raise ConnectionResetError("connection reset by peer")
            return super().read(4000)

    monkeypatch.setattr(dl, "fetch", lambda url, start=0: (Dropping(blob), 0, len(blob)))
    dest = tmp_path / "images.tar.gz"
    with pytest.raises(dl.OfflineError, match="4000 bytes"):
        dl.download("http://x/images.tar.gz", str(dest), hashlib.md5(blob).hexdigest(),
                    progress=False)
    assert (tmp_path / "images.tar.gz.part").read_bytes() == blob[:4000]
    fake_fetch, calls = _serve(blob)
    monkeypatch.setattr(dl, "fetch", fake_fetch)
    dl.download("http://x/images.tar.gz", str(dest), hashlib.md5(blob).hexdigest(),
                progress=False)
    assert calls == [4000] and dest.read_bytes() == blob


@pytest.fixture
def http_server():
    """A local HTTP server (127.0.0.1, no internet) serving one file, with or without
    Range support, to exercise the real urllib `fetch`."""
    state = {"blob": b"", "honour_range": True, "ranges": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if not self.path.endswith("/images.tar.gz"):
                self.send_error(404)
                return
            blob, start = state["blob"], 0
            state["ranges"].append(self.headers.get("Range"))
            if self.headers.get("Range") and state["honour_range"]:
                start = int(self.headers["Range"][6:].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range",
                                 f"bytes {start}-{len(blob) - 1}/{len(blob)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(blob) - start))
            self.end_headers()
            self.wfile.write(blob[start:])

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/data/"
    yield state
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("honour_range", [True, False])
def test_real_fetch_resumes_over_http(tmp_path, http_server, honour_range):
    blob = bytes(range(256)) * 40
    http_server.update(blob=blob, honour_range=honour_range)
    stale = blob[:777] if honour_range else b"?" * 777
    (tmp_path / "images.tar.gz.part").write_bytes(stale)
    dest = tmp_path / "images.tar.gz"
    dl.download(http_server["url"] + "images.tar.gz", str(dest),
                hashlib.md5(blob).hexdigest(), progress=False)
    assert http_server["ranges"] == ["bytes=777-"]
    assert dest.read_bytes() == blob


def test_http_error_is_reported_not_taken_for_offline(tmp_path, http_server):
    with pytest.raises(dl.PrepareError, match="HTTP 404") as info:
        dl.download(http_server["url"] + "missing.tar.gz", str(tmp_path / "m.tar.gz"),
                    "0" * 32, progress=False)
    assert not isinstance(info.value, dl.OfflineError)
