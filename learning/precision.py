"""`--precision`: Keras' mixed-precision policy, and `auto`, which picks the fastest
policy for this device (docs/speed.md has the measurements behind it).

    float32          everything in float32
    mixed_float16    computations in float16, variables float32 (GPUs since Volta)
    mixed_bfloat16   computations in bfloat16, variables float32 (GPUs since Ampere;
                     CPUs with AVX512_BF16 or AMX, which multiply bfloat16 in hardware)
    auto             mixed_bfloat16 on such a CPU or GPU, mixed_float16 on an older
                     GPU with tensor cores (compute capability 7.x), else float32

The logits and the loss stay float32 under every policy (`models.nn.SegNet`). A run
records the policy it used in config.json; `--resume` uses that one.
"""

from __future__ import annotations

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
CHOICES = ("auto",) + POLICIES
DEFAULT = "float32"  # of train.py, test.py and draw.py alike (docs/speed.md says why)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux), empty where /proc/cpuinfo is not there."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bfloat16() -> bool:
    """AVX512_BF16 or AMX: the CPU multiplies bfloat16 in hardware."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_policy() -> tuple[str, str]:
    """The policy `auto` picks here, and why (for the run's first lines)."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        major, minor = tf.config.experimental.get_device_details(gpus[0]).get(
            "compute_capability", (0, 0))
        if major >= 8:
            return "mixed_bfloat16", f"GPU of compute capability {major}.{minor}"
        if major == 7:
            return "mixed_float16", f"GPU of compute capability {major}.{minor}"
        return "float32", f"GPU of compute capability {major}.{minor}, no tensor cores"
    if cpu_has_bfloat16():
        return "mixed_bfloat16", "CPU with bfloat16 arithmetic (AVX512_BF16 or AMX)"
    return "float32", "CPU without bfloat16 arithmetic"


def use(name: str, verbose: bool = True) -> str:
    """Sets Keras' global policy `name` (or what `auto` picks); returns the policy."""
    import keras
    if name not in CHOICES:
        raise ValueError(f"--precision must be one of {', '.join(CHOICES)}. "
                         f"Received: {name!r}")
    policy, why = auto_policy() if name == "auto" else (name, None)
    keras.mixed_precision.set_global_policy(policy)
    if verbose:
        print(f"precision: {policy}" + (f" (auto: {why})" if why else ""))
    return policy
