"""Drawing predictions: colour overlays blended onto the image, with a legend.

The article added colours onto the image, which saturates to white on bright fur;
here each class colour is blended (`alpha`) so the animal stays visible under it.
"""

from __future__ import annotations

import cv2
import numpy as np

from learning.labels import CLASS_NAMES, IGNORE_LABEL

# RGB per label: background is left uncoloured; cat orange, dog blue; ignored grey.
COLORS = {1: (255, 140, 0), 2: (30, 144, 255), IGNORE_LABEL: (128, 128, 128)}


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blends class colours onto an RGB uint8 image: out = (1-a)*image + a*colour."""
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    out = image.astype(np.float32)
    for value, color in COLORS.items():
        where = label == value
        out[where] = (1 - alpha) * out[where] + alpha * np.asarray(color, np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def add_legend(image: np.ndarray, names=CLASS_NAMES[1:], title: str | None = None):
    """Draws a legend box (colour swatch + class name) in the top-left corner."""
    out = np.ascontiguousarray(image.copy())
    scale = max(0.35, min(out.shape[:2]) / 600)
    thick = max(1, int(round(scale * 2)))
    line_h = int(22 * scale) + 4
    rows = ([title] if title else []) + list(names)
    width = int(max(cv2.getTextSize(r, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0]
                    for r in rows)) + line_h + 12
    cv2.rectangle(out, (0, 0), (width, line_h * len(rows) + 6), (255, 255, 255), -1)
    y = line_h
    if title:
        cv2.putText(out, title, (6, y - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    thick, cv2.LINE_AA)
        y += line_h
    for i, name in enumerate(names, start=1):
        cv2.rectangle(out, (6, y - line_h + 6), (line_h, y - 2), COLORS[i], -1)
        cv2.putText(out, name, (line_h + 6, y - 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), thick, cv2.LINE_AA)
        y += line_h
    return out


def save_rgb(path: str, image: np.ndarray) -> None:
    """Writes an RGB uint8 array as PNG/JPEG (cv2 wants BGR)."""
    ext = "." + path.rsplit(".", 1)[-1] if "." in path else ".png"
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    with open(path, "wb") as f:  # Python's open copes with any file name
        f.write(buf.tobytes())
