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
