"""TensorFlow's CPU settings: importing `models` (as every script does before
TensorFlow loads) turns TensorFlow's oneDNN kernels on, unless the user chose."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ("import models\n"
         "from tensorflow.python.util import _pywrap_util_port as port\n"
         "import os\n"
         "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())\n")


@pytest.mark.parametrize("user_value, expected", [(None, "1 True"), ("0", "0 False")])
def test_importing_models_turns_onednn_on_unless_the_user_chose(user_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if user_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_value
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == expected


# The first screen: what a script prints into a log file is its own, not TensorFlow's
# start-up (absl's prelude, I0000 notices, the cuInit error on a machine with no
# GPU), and no progress bar escapes; --verbose shows everything.
NOISE = ("absl::InitializeLog", "cuInit", "\x1b[", "\r")


def test_a_script_logs_no_tensorflow_start_up_lines(tmp_path):
    import re

    from datasets import demo
    data = demo.generate(str(tmp_path / "demo"), num_train=4, num_test=2)
    log = tmp_path / "log.txt"
    cmd = [sys.executable, "train.py", "--data", data, "--out", str(tmp_path / "run"),
           "--model", "unet", "--image-size", "64", "--batch-size", "2", "--epochs", "1",
           "--weights", "none"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    with open(log, "w") as f:  # a file, not a terminal: as `./demo.sh > log`
        assert subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=f,
                              timeout=300).returncode == 0
    text = log.read_text()
    assert "[epoch 1/1]" in text  # the script's own lines are all there
    assert not re.search(r"^[IWEF]\d{4} ", text, re.M), text
    assert not [n for n in NOISE if n in text], text
    verbose = subprocess.run([sys.executable, "test.py", "--data", data, "--run",
                              str(tmp_path / "run"), "--verbose"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 0
    assert re.search(r"^I\d{4} ", verbose.stderr, re.M)  # --verbose: TensorFlow's too
