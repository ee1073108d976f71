"""A quiet first screen: what the scripts print is theirs, not TensorFlow's start-up.

On a machine without a GPU, `import tensorflow` prints lines a newcomer reads as
failures: absl's "All log messages before absl::InitializeLog() ..." prelude, oneDNN
and CUDA notices (`I0000 ...`) and `E0000 ... failed call to cuInit`. They come from
code that runs while TensorFlow's libraries load, before it reads
`TF_CPP_MIN_LOG_LEVEL` (tensorflow/tensorflow#100442), so no setting removes them. The
only thing that does: send file descriptor 2 through a small filter process for the
moment TensorFlow loads and probes its devices, and drop those lines there. Anything
else written then (a traceback, a warning, a fatal error) passes, and the filter is a
process of its own so a crash while loading still gets its message out.

When the output is not a terminal (a log file), progress bars are plain: Keras'
one line per epoch (`keras_verbose`) and no tqdm bars, whose carriage returns and
colour codes would fill a log. `--verbose` turns all of this off.
"""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys

# Run as `python -S -E -c FILTER MIN_LEVEL NO_GPU`: stdin -> stdout, line by line.
_FILTER = r"""
import re, sys
level, no_gpu = int(sys.argv[1]), sys.argv[2] == "1"
prelude = re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\)")
cpp = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.\-]+:\d+\] (.*)")
out = sys.stdout.buffer
for raw in sys.stdin.buffer:
    line = raw.decode("utf-8", "replace")
    m = cpp.match(line)
    if prelude.match(line):
        continue
    if m:
        severity = "IWEF".index(m.group(1))
        if severity < min(level, 3) or (no_gpu and "failed call to cuInit" in line):
            continue
    out.write(raw)
    out.flush()
"""


VERBOSE = False  # --verbose: every line, Keras' bar everywhere


def quiet_start(verbose: bool = False) -> None:
    """Loads TensorFlow without its start-up lines (see the module docstring); call
    it before anything imports TensorFlow. With `verbose` every line shows."""
    global VERBOSE
    VERBOSE = verbose
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not isatty(sys.stderr):
        os.environ.setdefault("TQDM_DISABLE", "1")  # any value disables tqdm
    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _NoAutoGraphFallback) for f in tf_logger.filters):
        tf_logger.addFilter(_NoAutoGraphFallback())
    if "tensorflow" in sys.modules or os.name != "posix":
        return  # loaded already, or no file descriptors to redirect
    try:
        level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        level = 0
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    try:
        filter_ = subprocess.Popen(
            [sys.executable, "-S", "-E", "-c", _FILTER, str(level),
             "0" if gpu_possible() else "1"],
            stdin=read_end, stdout=saved, close_fds=True,
            start_new_session=True)  # Ctrl-C at the terminal must not stop it
    except OSError:
        for fd in (read_end, write_end, saved):
            os.close(fd)
        return
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        import tensorflow as tf
        tf.config.list_physical_devices()  # where TensorFlow calls cuInit
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the last write end closes: the filter ends
        os.close(saved)
        try:
            filter_.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def gpu_possible() -> bool:
    """Whether an NVIDIA GPU may be there, without importing TensorFlow: a driver
    device node or /proc entry (or WSL's /dev/dxg); CUDA_VISIBLE_DEVICES "" or "-1"
    means none is wanted."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/nvidiactl")
                or os.path.exists("/dev/dxg") or os.path.exists("/proc/driver/nvidia"))


def keras_verbose(verbose: bool) -> int:
    """`verbose=` for Keras' `fit`: its bar (1) on a terminal; elsewhere one plain line
    per epoch (2): the bar always writes colour codes and carriage returns."""
    return 0 if not verbose else 1 if VERBOSE or isatty(sys.stdout) else 2


def isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _NoAutoGraphFallback(logging.Filter):
    """Drops TensorFlow's "AutoGraph could not transform <fn> and will run it as-is"
    (`tf.autograph.set_verbosity` does not reach it); nothing else is touched."""

    def filter(self, record):
        return not str(record.msg).startswith("AutoGraph could not transform")
