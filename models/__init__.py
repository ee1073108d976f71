"""The segmentation networks, their layers, losses and metrics.

`import models` registers every custom Keras object of the project, so a saved run
opens in a plain Python session:

    >>> import keras, models
    >>> model = keras.models.load_model("runs/demo/best.keras")   # uint8 in, logits out

`ARCHITECTURES` maps each `--model` name to its `SegNet` class.
"""

import learning  # noqa: F401 (its TensorFlow CPU settings, before TensorFlow loads)
from models import layers, losses, metrics  # noqa: F401 (registers custom objects)
from models.deeplab import DeepLabV3Plus
from models.fcn import FCN8s, FCN16s, FCN32s
from models.gcn import GCN
from models.nn import SegNet, SegmentationModel
from models.segnet import SegNetArch
from models.solo import SOLO
from models.unet import UNet

ARCHITECTURES: dict[str, type[SegNet]] = {
    "gcn": GCN,
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "deeplabv3plus": DeepLabV3Plus,
    "unet": UNet,
    "segnet": SegNetArch,
    "solo": SOLO,  # instance segmentation: train.py/test.py/draw.py branch for it
}


def build_model(name: str, **kwargs) -> SegNet:
    """An architecture by its command-line name, e.g. `build_model("gcn", k=7)`."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](**kwargs)


__all__ = ["ARCHITECTURES", "SegNet", "SegmentationModel", "build_model", "GCN",
           "FCN8s", "FCN16s", "FCN32s", "DeepLabV3Plus", "UNet", "SegNetArch", "SOLO"]
