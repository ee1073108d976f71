"""Benchmark: memory of the tf.data stream does not grow with the number of images.

Writes N synthetic photo-sized pairs (500x375 JPEG + trimap, like Oxford's), then
streams them at --image-size in batches of --batch-size (as train.py does) and records
the process's resident memory after each 10% of the images. Also prints what the
article's float32 arrays would need for the same N at the same size.

    python bench/stream_memory.py --num 2000 --image-size 512
"""

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_set(root: str, num: int) -> None:
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    base = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    mask = np.full((375, 500), 2, np.uint8)
    mask[100:300, 150:350] = 1
    for i in range(num):
        name = f"{'Cat' if i % 2 else 'dog'}_{i:05d}"
        Image.fromarray(np.roll(base, i, axis=1)).save(
            os.path.join(root, "images", name + ".jpg"), quality=90)
        Image.fromarray(mask).save(os.path.join(root, "masks", name + ".png"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()
    from datasets.files import list_images
    from datasets.stream import make_dataset
    with tempfile.TemporaryDirectory() as root:
        t = time.time()
        write_set(root, args.num)
        print(f"wrote {args.num} pairs in {time.time() - t:.1f}s")
        paths = list_images(root)
        ds = make_dataset(paths, args.image_size, args.batch_size, shuffle=True,
                          augment=True)
        start_rss, seen, marks, t = rss_mb(), 0, [], time.time()
        step = max(1, args.num // 10)
        for images, labels in ds:
            seen += int(images.shape[0])
            if seen // step > len(marks):
                marks.append((seen, rss_mb()))
        elapsed = time.time() - t
    print(f"streamed {seen} images at {args.image_size}px in {elapsed:.1f}s "
          f"({seen / elapsed:.0f} img/s)")
    print("images seen -> RSS (MB): " + ", ".join(f"{n}: {m:.0f}" for n, m in marks))
    growth = marks[-1][1] - marks[0][1]
    print(f"RSS at start of streaming {start_rss:.0f} MB; growth from first to last "
          f"mark {growth:+.0f} MB")
    px = args.image_size ** 2
    print(f"article's float32 arrays for {args.num} images: "
          f"{args.num * px * (3 + 3) * 4 / 2**30:.1f} GiB; for 7,390: "
          f"{7390 * px * 6 * 4 / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
