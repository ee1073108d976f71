"""Opening run files written before the networks became Keras models themselves.

Until then a checkpoint held a `SegmentationModel` (or `SOLOModel`) whose config
nested the architecture's: `{"name": ..., "segnet": {"class_name": "GCN", "config":
{...}}}`. The layers, their names and their order are unchanged, so Keras loads the
old weights into the new class; these two registrations only turn the old config
into the architecture it names. `keras.models.load_model("old_run/best.keras")` then
returns a `GCN` (or `UNet`, `SOLO`, ...) like a new run's file.
"""

from __future__ import annotations

import keras


class _OldRunModel:
    """Reads an old checkpoint's config; never instantiated."""

    def get_config(self):  # registration asks for it; old files are only read
        raise NotImplementedError

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return keras.saving.deserialize_keras_object(config["segnet"],
                                                     custom_objects=custom_objects)


keras.saving.register_keras_serializable("segmentation", "SegmentationModel")(
    type("SegmentationModel", (_OldRunModel,), {}))
keras.saving.register_keras_serializable("segmentation", "SOLOModel")(
    type("SOLOModel", (_OldRunModel,), {}))
