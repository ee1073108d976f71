"""Reading, batching, streaming and preparing the Oxford-IIIT Pet data, your own data
with a `classes.json` (`datasets.classes`), and the demo sets.

As in the article: ``from datasets import data as dataset``.
"""

import common  # noqa: F401 (TensorFlow's process settings, before TensorFlow loads)
