"""The machine, and its real matrix-multiply peak: the yardstick every speed row is a
share of.

    float32   the best of numpy's sgemm, with the BLAS kernel it picks by itself,
              and `tf.matmul` (oneDNN on this project's CPUs)
    bfloat16  `tf.matmul` on bfloat16 tensors (where the CPU has AVX512_BF16 or AMX)

numpy runs in a child process without `OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE`: a
machine may set them (this one sets Haswell, OpenBLAS' AVX2 kernel), which halves
sgemm on an AVX-512 CPU and so doubles every share measured against it.
`threadpoolctl` names the kernel OpenBLAS chose. Each timing keeps the best call: on
shared cores the least disturbed one is closest to what the hardware does; the
benchmark times the peak again around each measurement, so host noise and a slow
model can be told apart.

    python bench/peak.py        # prints both peaks and the kernel, as JSON
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from learning.precision import cpu_flags  # noqa: E402
from learning.precision import cpu_has_bfloat16 as has_fast_bfloat16  # noqa: E402

N = 2048  # square matrices: 2 n^3 flops per product
BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

_NUMPY_CHILD = r"""
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_info
n, seconds = int(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(0)
a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
a @ b
best, start = float("inf"), time.perf_counter()
while time.perf_counter() - start < seconds:
    t = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - t)
blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
print(json.dumps({"gflops": 2 * n ** 3 / best / 1e9,
                  "kernel": blas[0].get("architecture") if blas else None,
                  "library": blas[0].get("internal_api") if blas else None}))
"""


def machine_info() -> dict:
    """CPU model and its vector extensions, cores this process may use, versions."""
    import keras
    import numpy as np
    import tensorflow as tf
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f
                 if line.startswith("model name")]
    vector = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    return {"cpu": names[0] if names else "unknown CPU", "cpu_flags": vector,
            "cpu_cores": len(os.sched_getaffinity(0)), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "blas_environment": {k: os.environ[k] for k in BLAS_VARIABLES
                                 if k in os.environ}}


def numpy_sgemm(seconds: float = 2.0) -> dict:
    """numpy's sgemm in a child process with the BLAS kernel it picks itself:
    `{"gflops", "kernel", "library"}`."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARIABLES}
    out = subprocess.run([sys.executable, "-c", _NUMPY_CHILD, str(N), str(seconds)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tf_matmul(dtype: str = "float32", seconds: float = 2.0) -> float:
    """`tf.matmul` GFLOP/s of two n x n `dtype` matrices, best call over `seconds`
    (the product is pulled back to the host, so each call is finished)."""
    import tensorflow as tf
    rng = tf.random.Generator.from_seed(0)
    a, b = (tf.cast(rng.normal((N, N)), dtype) for _ in range(2))
    product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    product(a, b).numpy()  # traced, warm
    best, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        product(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return 2 * N ** 3 / best / 1e9


def measure_peaks(seconds: float = 2.0) -> dict:
    """One timing of each peak: `{"float32", "bfloat16", "numpy", "tf_float32",
    "tf_bfloat16", "kernel"}` (GFLOP/s; bfloat16 None without fast bfloat16)."""
    numpy = numpy_sgemm(seconds)
    tf32 = tf_matmul("float32", seconds)
    bf16 = tf_matmul("bfloat16", seconds) if has_fast_bfloat16() else None
    return {"float32": max(numpy["gflops"], tf32), "bfloat16": bf16,
            "numpy": numpy["gflops"], "tf_float32": tf32, "tf_bfloat16": bf16,
            "kernel": f"{numpy['library']} {numpy['kernel']}"}


def best_of(timings: list[dict]) -> dict:
    """The best of several `measure_peaks` timings, key by key."""
    best = dict(timings[0])
    for t in timings[1:]:
        for key, value in t.items():
            if isinstance(value, float) and (best[key] is None or value > best[key]):
                best[key] = value
    return best


if __name__ == "__main__":
    import common  # noqa: F401 (the project's TensorFlow settings)
    print(json.dumps({**machine_info(), **measure_peaks()}, indent=1))
