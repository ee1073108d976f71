"""The cause of the "slow mode" (docs/speed.md), in plain TensorFlow: deleting a
`tf.data` iterator whose pipeline is autotuned can wait for the autotuner thread's
current sleep to end. That thread sleeps 10, 20, 40, ... ms, doubling up to about a
minute, so an iterator dropped at a random moment can cost from nothing to many
seconds. Keras drops its iterator when `fit`, `evaluate` or `predict` returns.

    python bench/autotune_wait.py --seconds 7 --repeats 5   # autotune on, then off

prints, for each setting and each fresh process, how long the pipeline was iterated
and how long `del` took. The wait is a race, not a rule: on the development machine
(December 2026) it came in 8 of 23 processes with autotune on, every time as 3.23 s
(the sleep that began 5.11 s after the iterator ends at 10.23 s), and in none of 10
with autotune off. Nothing of the project is imported.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def wait_on_delete(seconds: float, autotune: bool) -> tuple[float, float]:
    """Iterates a parallel-mapped, prefetched pipeline for `seconds`, deletes the
    iterator; returns (seconds iterated, seconds the deletion took)."""
    import tensorflow as tf
    ds = (tf.data.Dataset.range(10**9)
          .map(lambda x: x + 1, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))
    options = tf.data.Options()
    options.autotune.enabled = autotune
    ds = ds.with_options(options)
    start = time.perf_counter()
    it = iter(ds)
    while time.perf_counter() - start < seconds:
        next(it)
    iterated = time.perf_counter()
    del it
    return iterated - start, time.perf_counter() - iterated


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=7.0,
                   help="how long to iterate before deleting the iterator")
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per setting")
    p.add_argument("--one", choices=["on", "off"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:  # one measurement, in this (fresh) process
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        iterated, deleting = wait_on_delete(args.seconds, args.one == "on")
        print(f"autotune {args.one:<3}: iterated {iterated:.2f} s, deleting the "
              f"iterator took {deleting:.2f} s", flush=True)
        return
    for setting in ("on", "off"):
        for _ in range(args.repeats):
            subprocess.run([sys.executable, os.path.abspath(__file__), "--one", setting,
                            "--seconds", str(args.seconds)], check=True,
                           stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
