"""What every floor of the project shares: the bottom of the house.

`datasets/` and `models/` (and everything above them) import from here, and nothing
here imports from them. Three small modules:

    common.labels  the classes: names, colours, the ignore label
    common.coco    COCO instance masks (run-length encoding)
    common.files   the one atomic writer: a file (or folder) appears whole or not at all

Importing this package also makes the process settings TensorFlow reads once, when it
loads, so they hold whatever is imported next:

* `TF_ENABLE_ONEDNN_OPTS=1`: TensorFlow's oneDNN CPU kernels. TensorFlow turns them
  on by itself only on CPUs with AVX-512 VNNI or AMX; on AVX2 machines they train GCN
  about 1.4x faster (docs/speed.md). `TF_ENABLE_ONEDNN_OPTS=0` keeps TensorFlow's
  own choice.
* `TF_CPP_MIN_LOG_LEVEL=2`: TensorFlow's C++ start-up lines stay quiet.

A value the user set is kept. Code that imports TensorFlow before this package keeps
TensorFlow's defaults.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
