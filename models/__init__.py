"""The segmentation networks: one Keras model class per architecture.

`import models` registers every custom Keras object of the project, so a saved run
opens in a plain Python session as its own class:

    >>> import keras, models
    >>> net = keras.models.load_model("runs/demo/best.keras")   # a models.GCN
    >>> isinstance(net, models.SegNet) and isinstance(net, keras.Model)
    True

`ARCHITECTURES` maps each `--model` name to its class; `build_model` builds one.
"""

import common  # noqa: F401 (TensorFlow's process settings, before TensorFlow loads)
from models import layers, legacy, losses, metrics  # noqa: F401 (registers custom objects)
from models.deeplab import DeepLabV3Plus
from models.fcn import FCN8s, FCN16s, FCN32s
from models.gcn import GCN
from models.nn import SegNet
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
    "solo": SOLO,  # instance segmentation (its `task` is "instance")
}


def build_model(name: str, **kwargs) -> SegNet:
    """An architecture by its command-line name, e.g. `build_model("gcn", k=7)`."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](**kwargs)


__all__ = ["ARCHITECTURES", "SegNet", "build_model", "GCN", "FCN8s", "FCN16s", "FCN32s",
           "DeepLabV3Plus", "UNet", "SegNetArch", "SOLO"]
