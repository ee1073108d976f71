"""Training, evaluation and the scripts' helpers.

Importing this package (every script does, before TensorFlow loads) turns on
TensorFlow's oneDNN CPU kernels unless `TF_ENABLE_ONEDNN_OPTS` is already set.
TensorFlow enables them by itself only on CPUs with AVX-512 VNNI / AMX; on this
project's AVX2 machine they train GCN at 256x256 about 1.4x faster (README, Speed).
`TF_ENABLE_ONEDNN_OPTS=0` restores TensorFlow's default. TensorFlow reads the variable
once, when it loads, so code that imports TensorFlow before `learning` or `models`
keeps TensorFlow's own choice.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
