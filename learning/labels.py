"""The label encoding every part of the project shares.

It lives here, in a module that imports nothing, so `datasets` (which writes labels),
`models` (whose losses and metrics skip the ignore label) and `learning` (which scores
and draws them) all read the same numbers without importing each other.

    0 background, 1 cat, 2 dog, IGNORE_LABEL (255) for trimap-unknown pixels and for
    the padding around an image smaller than the crop.
"""

IGNORE_LABEL = 255
CLASS_NAMES = ("background", "cat", "dog")
NUM_CLASSES = len(CLASS_NAMES)
