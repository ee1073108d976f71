"""The label encoding every part of the project shares.

    0 background, 1 cat, 2 dog, and IGNORE_LABEL (255) for the trimap's unknown
    border and for the padding around an image smaller than the crop.

`datasets` writes these labels, `models` skips the ignore label in its losses and
metrics, `learning` scores and draws them: all read the numbers here. SOLO, which
finds objects rather than labelling pixels, has the same classes without background
(`INSTANCE_CLASSES`: 0 cat, 1 dog).
"""

IGNORE_LABEL = 255
CLASS_NAMES = ("background", "cat", "dog")
NUM_CLASSES = len(CLASS_NAMES)
INSTANCE_CLASSES = CLASS_NAMES[1:]

# RGB colours of the labels in overlays: background stays uncoloured, the ignored
# border grey.
CLASS_COLOURS = {1: (255, 140, 0), 2: (30, 144, 255)}
IGNORE_COLOUR = (128, 128, 128)
# RGB colours of instances, one after the other (matplotlib's tab10, less its grey).
INSTANCE_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                    (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34),
                    (23, 190, 207))
