"""A synthetic object-detection data set made from material that ships: scikit-learn's `load_digits` (1,797
handwritten digits, 8 x 8, 17 grey levels), pasted at random positions, sizes and colours onto textured, noisy
backgrounds, a few to an image, written in COCO format.

The train, validation and test images draw their digits from three disjoint parts of `load_digits` (a seeded
70/15/15 split), so validation and test hold handwriting the detector never saw. Every image comes from its own
random generator, seeded by (seed, split, index): the set is the same, byte for byte, on every run and
whatever the order. It is written once, into $PUHUI_HOME/data/<name>/, and read from there afterwards:

    <name>/train/images/000000.png ...   <name>/train/annotations.json
    <name>/val/images/000000.png ...     <name>/val/annotations.json
    <name>/test/images/000000.png ...    <name>/test/annotations.json
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..atomic import fsync_dir
from ..settings import get_settings

VERSION = 1          # bump when the drawing changes, so that cached sets are not reused
CLASSES = tuple(str(d) for d in range(10))
SPLITS = {"train": 0, "val": 1, "test": 2}
HELD_OUT = 0.15      # share of load_digits' images kept for the validation set, and again for the test set


@dataclass(frozen=True)
class SyntheticSpec:
    n_train: int = 2000
    n_val: int = 200
    n_test: int = 300
    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 4
    min_digit: int = 20        # side of a pasted digit, in pixels
    max_digit: int = 44
    seed: int = 0

    @property
    def name(self) -> str:
        key = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True).encode()
        return f"synthetic-digits-{hashlib.sha256(key).hexdigest()[:12]}"


def digit_split(seed: int, n: int) -> dict[str, np.ndarray]:
    """Disjoint index sets of n digits for train, val and test (seeded)."""
    order = np.random.default_rng(seed).permutation(n)
    k = int(round(HELD_OUT * n))
    return {"train": order[2 * k:], "val": order[:k], "test": order[k:2 * k]}


def _digits(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """load_digits' images (0..1 float [n, 8, 8]) and labels of each split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return {k: (d.images[i] / 16.0, d.target[i]) for k, i in digit_split(seed, len(d.target)).items()}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """float [size, size, 3] in 0..255: a smooth colour field, a few distracting strokes, pixel noise."""
    from PIL import Image, ImageDraw

    g = int(rng.integers(2, 6))
    grid = rng.uniform(0, 255, 3) + rng.normal(0, 45, (g, g, 3))
    img = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, 4))
        draw.line((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 3)))
    return np.asarray(img, dtype=np.float64) + rng.normal(0, rng.uniform(2, 12), (size, size, 3))


def _alpha(digit: np.ndarray, w: int, h: int) -> np.ndarray:
    """The 8 x 8 digit, 0..1, scaled to h x w with bilinear filtering."""
    from PIL import Image

    return np.asarray(Image.fromarray(digit.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def draw_image(rng: np.random.Generator, spec: SyntheticSpec, digits: np.ndarray,
               labels: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """One image (uint8 [size, size, 3]) and its objects [{"label": digit, "box": [x, y, w, h]}] (COCO boxes:
    the tight box of the digit's strokes, alpha > 0.3)."""
    size = spec.image_size
    canvas = _background(rng, size)
    placed: list[tuple[int, int, int, int]] = []
    objects = []
    for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
        for _try in range(30):   # a spot that overlaps no digit already there
            s = int(rng.integers(spec.min_digit, spec.max_digit + 1))
            w, h = s, max(8, int(round(s * rng.uniform(0.8, 1.2))))
            h = min(h, size)
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            if all(x >= a + c or a >= x + w or y >= b + d or b >= y + h for a, b, c, d in placed):
                break
        else:
            continue
        k = int(rng.integers(len(labels)))
        alpha = _alpha(digits[k], w, h)
        region = canvas[y:y + h, x:x + w]
        bg = region.reshape(-1, 3).mean(0)
        for _c in range(20):   # a colour that stands out from the background under it
            colour = rng.uniform(0, 255, 3)
            if abs(_luma(colour) - _luma(bg)) > 90:
                break
        else:
            colour = np.full(3, 0.0 if _luma(bg) > 127 else 255.0)
        canvas[y:y + h, x:x + w] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
        rows, cols = np.nonzero(alpha > 0.3)
        if len(rows) == 0:
            continue
        placed.append((x, y, w, h))
        x0, y0 = x + int(cols.min()), y + int(rows.min())
        objects.append({"label": int(labels[k]),
                        "box": [x0, y0, x + int(cols.max()) + 1 - x0, y + int(rows.max()) + 1 - y0]})
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), objects


def _write_split(folder: Path, split: str, n: int, spec: SyntheticSpec, digits, labels) -> None:
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        rng = np.random.default_rng([spec.seed, SPLITS[split], i])
        pixels, objects = draw_image(rng, spec, digits, labels)
        file_name = f"{i:06d}.png"
        Image.fromarray(pixels).save(folder / "images" / file_name, optimize=False)
        images.append({"id": i + 1, "file_name": file_name, "width": spec.image_size, "height": spec.image_size})
        for o in objects:
            x, y, w, h = o["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": o["label"] + 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    coco = {"info": {"description": f"puhui synthetic digits ({split})", "version": VERSION},
            "images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": c, "supercategory": "digit"} for i, c in enumerate(CLASSES)]}
    (folder / "annotations.json").write_text(json.dumps(coco))


def synthetic_detection(spec: SyntheticSpec | None = None, root: Path | None = None) -> Path:
    """The folder of the synthetic set described by `spec` (made on first use; atomic: built in a temporary
    folder, then renamed into place). `root` defaults to $PUHUI_HOME/data."""
    spec = spec or SyntheticSpec()
    if spec.min_digit < 8 or spec.max_digit > spec.image_size or spec.min_digit > spec.max_digit:
        from ..errors import BadInput
        raise BadInput(f"digit sizes {spec.min_digit}..{spec.max_digit} do not fit {spec.image_size}-pixel images")
    root = root or get_settings().home / "data"
    out = root / spec.name
    if (out / "spec.json").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{spec.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        parts = _digits(spec.seed)
        for split, n in (("train", spec.n_train), ("val", spec.n_val), ("test", spec.n_test)):
            _write_split(tmp / split, split, n, spec, *parts[split])
        (tmp / "spec.json").write_text(json.dumps({"version": VERSION, **asdict(spec)}, indent=2))
        try:
            os.rename(tmp, out)
        except OSError:   # another process made it first
            if not (out / "spec.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(root)
    return out
