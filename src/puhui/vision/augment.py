"""Image augmentations for detection that move the boxes with the pixels. Boxes are float [n, 4] x0, y0, x1, y1
in pixels of the image they come with, where pixel (i, j) covers [j, j+1) x [i, i+1)."""
from __future__ import annotations

import numpy as np

from ..errors import BadInput


def resize(image, boxes: np.ndarray, size: tuple[int, int]):
    """(image resized to size (height, width), boxes scaled with it); bilinear."""
    from PIL import Image

    h, w = size
    if h < 1 or w < 1:
        raise BadInput(f"cannot resize to {size}")
    sx, sy = w / image.width, h / image.height
    out = image.resize((w, h), Image.BILINEAR) if (h, w) != (image.height, image.width) else image
    return out, (np.asarray(boxes, np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], np.float32))


def hflip(image, boxes: np.ndarray):
    """(image mirrored left to right, boxes mirrored with it)."""
    from PIL import Image

    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return image.transpose(Image.FLIP_LEFT_RIGHT), np.stack([image.width - b[:, 2], b[:, 1],
                                                              image.width - b[:, 0], b[:, 3]], 1)


def crop(image, boxes: np.ndarray, labels: np.ndarray, window: tuple[int, int, int, int],
         min_visible: float = 0.5):
    """(image cut to window (x0, y0, x1, y1), boxes clipped to it and shifted, their labels). A box keeps only
    when at least `min_visible` of its area is inside the window (and it is not empty there)."""
    x0, y0, x1, y1 = window
    if not (0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height):
        raise BadInput(f"crop window {window} is not inside a {image.width} x {image.height} image")
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    clipped = np.clip(b, [x0, y0, x0, y0], [x1, y1, x1, y1]).astype(np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (inside > 0) & (inside >= min_visible * area)
    shifted = clipped[keep] - np.array([x0, y0, x0, y0], np.float32)
    return image.crop((x0, y0, x1, y1)), shifted, np.asarray(labels)[keep]


def random_crop(image, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator, min_scale: float = 0.6,
                min_visible: float = 0.5):
    """`crop` to a random window whose sides are min_scale..1 of the image's, anywhere inside it."""
    w = int(rng.integers(max(1, int(min_scale * image.width)), image.width + 1))
    h = int(rng.integers(max(1, int(min_scale * image.height)), image.height + 1))
    x0, y0 = int(rng.integers(0, image.width - w + 1)), int(rng.integers(0, image.height - h + 1))
    return crop(image, boxes, labels, (x0, y0, x0 + w, y0 + h), min_visible)
