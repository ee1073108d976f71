"""Training, evaluation, and what the scripts share: the floor between the models and
datasets below and train.py / test.py / draw.py / export.py above.

Importing it (every script does, before TensorFlow loads) makes TensorFlow's process
settings (`common`).
"""

import common  # noqa: F401
