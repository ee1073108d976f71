"""Drawing predictions: colour overlays blended onto the image, with a legend; each
instance of an instance model in its own colour, outlined and labelled.

The article added colours onto the image, which saturates to white on bright fur;
here each class colour is blended (`alpha`) so the animal stays visible under it.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from common.labels import INSTANCE_CLASSES, INSTANCE_PALETTE, PETS, Classes


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5,
            classes: Classes = PETS) -> np.ndarray:
    """Blends class colours onto an RGB uint8 image: out = (1-a)*image + a*colour.
    Each class has its colour in `classes` (the pets: background uncoloured, cat
    orange, dog blue); ignored pixels are grey."""
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    out = image.astype(np.float32)
    for value, color in classes.overlay_colours.items():
        where = label == value
        out[where] = (1 - alpha) * out[where] + alpha * np.asarray(color, np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def add_legend(image: np.ndarray, classes: Classes = PETS, title: str | None = None):
    """Draws a legend box (colour swatch + class name) in the top-left corner, a row
    per coloured class of `classes` (an uncoloured background needs none)."""
    out = np.ascontiguousarray(image.copy())
    scale = max(0.35, min(out.shape[:2]) / 600)
    thick = max(1, int(round(scale * 2)))
    line_h = int(22 * scale) + 4
    shown = [(name, colour) for name, colour in zip(classes.names, classes.colours)
             if colour is not None]
    rows = ([title] if title else []) + [name for name, _ in shown]
    width = int(max(cv2.getTextSize(r, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0]
                    for r in rows)) + line_h + 12
    cv2.rectangle(out, (0, 0), (width, line_h * len(rows) + 6), (255, 255, 255), -1)
    y = line_h
    if title:
        cv2.putText(out, title, (6, y - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    thick, cv2.LINE_AA)
        y += line_h
    for name, colour in shown:
        cv2.rectangle(out, (6, y - line_h + 6), (line_h, y - 2), colour, -1)
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


class Drawer:
    """Writes an image | truth | prediction overlay per image, in stream order.

    The drawing runs in a background thread, so the evaluation does not wait for
    PNG encoding; at most `backlog` batches wait to be drawn. `close()` waits for the
    rest and raises any error the drawing met.
    """

    def __init__(self, names, out_dir, limit=None, backlog: int = 4,
                 classes: Classes = PETS):
        from concurrent.futures import ThreadPoolExecutor
        os.makedirs(out_dir, exist_ok=True)
        self.names, self.out_dir, self.limit, self.count = names, out_dir, limit, 0
        self.classes = classes
        self.pool, self.pending, self.backlog = ThreadPoolExecutor(1), [], backlog

    def __call__(self, images, labels, pred):
        if len(self.pending) >= self.backlog:
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(self.draw, images, labels, pred))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for job in self.pending:
            job.result()

    def draw(self, images, labels, pred):
        for image, label, p in zip(images, labels, pred.astype(np.uint8)):
            if self.limit is not None and self.count >= self.limit:
                return
            panel = np.concatenate([image, overlay(image, label, classes=self.classes),
                                    overlay(image, p, classes=self.classes)], 1)
            zoom = max(1, 256 // panel.shape[0])  # small crops: enlarge, keep pixels
            panel = panel.repeat(zoom, axis=0).repeat(zoom, axis=1)
            panel = add_legend(panel, self.classes, title="image | truth | prediction")
            save_rgb(os.path.join(self.out_dir, self.names[self.count] + ".png"), panel)
            self.count += 1


def zoom(image: np.ndarray, min_side: int = 256) -> np.ndarray:
    """Small images enlarged by a whole factor (pixels kept), so labels are legible."""
    k = max(1, -(-min_side // min(image.shape[:2])))
    return image.repeat(k, axis=0).repeat(k, axis=1)


def draw_instances(image, masks, classes, scores=None, alpha: float = 0.5,
                   min_side: int = 256, names=INSTANCE_CLASSES) -> np.ndarray:
    """Each instance blended in its own colour, outlined, and labelled with its class
    name (`names[classes[n]]`, and score) at the top-left of its mask; drawn worst
    first, so the best is on top. Images under `min_side` are enlarged first (`zoom`)."""
    out = zoom(image, min_side).astype(np.float32)
    k = out.shape[0] // image.shape[0]
    order = range(len(classes)) if scores is None else np.argsort(scores, kind="stable")
    labels = []
    for n in order:
        mask = np.asarray(masks[n], np.uint8).repeat(k, axis=0).repeat(k, axis=1)
        if not mask.any():
            continue
        colour = np.asarray(INSTANCE_PALETTE[n % len(INSTANCE_PALETTE)], np.float32)
        where = mask > 0
        out[where] = (1 - alpha) * out[where] + alpha * colour
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        labels.append((n, contours, colour))
    out = np.ascontiguousarray(np.clip(np.round(out), 0, 255).astype(np.uint8))
    scale = max(0.35, min(out.shape[:2]) / 700)
    for n, contours, colour in labels:
        cv2.drawContours(out, contours, -1, colour.tolist(), max(1, k // 2))
        text = names[int(classes[n])] + ("" if scores is None
                                         else f" {float(scores[n]):.2f}")
        x, y, _, _ = cv2.boundingRect(np.concatenate(contours))
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        y = max(y, h + 4)
        cv2.rectangle(out, (x, y - h - 4), (x + w + 4, y), colour.tolist(), -1)
        cv2.putText(out, text, (x + 2, y - 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out
