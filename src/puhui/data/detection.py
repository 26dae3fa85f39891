"""Object-detection data on disk: COCO (an annotations JSON beside an images folder) and YOLO (images/ and
labels/ with one `class cx cy w h` line an object, relative to the image, and the class names in data.yaml or
classes.txt). Both load into one `DetectionData`: image paths, boxes as x0, y0, x1, y1 in pixels, and class
indices 0..C-1 into `classes`.

`open_detection_dir(DIR)` finds the layout by itself:

- COCO  DIR/train/annotations.json (+ DIR/train/images/), DIR/val/..., DIR/test/... (puhui's synthetic set);
        DIR/annotations/instances_<split>.json with images in DIR/<split>/ or DIR/images/<split>/;
        DIR/annotations.json with DIR/images/ (one set, split here);
- YOLO  DIR/data.yaml naming train/val image folders (labels where "images" becomes "labels"), or
        DIR/images/ + DIR/labels/ with DIR/data.yaml or DIR/classes.txt (one set, split here).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VAL_SHARE = 0.1      # of a set without a validation split, held out for validation


@dataclass
class DetectionData:
    images: list[Path]
    sizes: list[tuple[int, int]]            # (height, width) of each image
    boxes: list[np.ndarray]                 # float32 [n, 4] x0, y0, x1, y1 in pixels, per image
    labels: list[np.ndarray]                # int64 [n] in 0..len(classes)-1, per image
    classes: list[str]
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> "DetectionData":
        idx = [int(i) for i in index]
        return DetectionData([self.images[i] for i in idx], [self.sizes[i] for i in idx],
                             [self.boxes[i] for i in idx], [self.labels[i] for i in idx], self.classes,
                             self.source, dict(self.meta))

    @property
    def n_objects(self) -> int:
        return sum(len(b) for b in self.boxes)


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{path}: cannot read the COCO annotations ({e})") from None


def read_coco(annotations: str | Path, images_dir: str | Path) -> DetectionData:
    """A COCO detection file: categories (sorted by id, numbered 0..C-1 in that order), images (file_name,
    width, height) and annotations (bbox [x, y, w, h]; crowd regions and empty boxes are left out)."""
    annotations, images_dir = Path(annotations), Path(images_dir)
    d = _load_json(annotations)
    if not isinstance(d, dict) or not all(isinstance(d.get(k), list) for k in ("images", "annotations", "categories")):
        raise BadInput(f"{annotations}: not COCO detection annotations (needs lists images, annotations, categories)")
    try:
        cats = sorted(d["categories"], key=lambda c: c["id"])
        index = {c["id"]: i for i, c in enumerate(cats)}
        classes = [str(c["name"]) for c in cats]
        images = {im["id"]: im for im in d["images"]}
        per_image: dict = {i: ([], []) for i in images}
        for a in d["annotations"]:
            if a.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            if w <= 0 or h <= 0:
                continue
            if a["image_id"] not in per_image or a["category_id"] not in index:
                raise BadInput(f"{annotations}: annotation {a.get('id')} names an unknown image or category")
            per_image[a["image_id"]][0].append([x, y, x + w, y + h])
            per_image[a["image_id"]][1].append(index[a["category_id"]])
        ids = sorted(images)
        paths = [images_dir / images[i]["file_name"] for i in ids]
        sizes = [(int(images[i]["height"]), int(images[i]["width"])) for i in ids]
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput(f"{annotations}: malformed COCO annotations ({type(e).__name__}: {e})") from None
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise BadInput(f"{annotations}: {len(missing)} image file(s) missing, e.g. {missing[0]}")
    return DetectionData(paths, sizes, [np.array(per_image[i][0], np.float32).reshape(-1, 4) for i in ids],
                         [np.array(per_image[i][1], np.int64) for i in ids], classes, str(annotations),
                         {"image_ids": ids})


def _yaml_classes(path: Path) -> tuple[list[str] | None, dict]:
    import yaml

    try:
        y = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise BadInput(f"{path}: cannot read ({e})") from None
    if not isinstance(y, dict):
        raise BadInput(f"{path}: not a YOLO data.yaml (a mapping with names)")
    names = y.get("names")
    if isinstance(names, dict):
        names = [str(names[k]) for k in sorted(names, key=int)]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    elif names is not None:
        raise BadInput(f"{path}: names must be a list or a mapping index -> name")
    return names, y


def yolo_classes(root: str | Path) -> list[str]:
    """Class names of a YOLO folder: data.yaml's `names`, else classes.txt (one a line)."""
    root = Path(root)
    for name in ("data.yaml", "dataset.yaml"):
        if (root / name).is_file():
            names, _ = _yaml_classes(root / name)
            if names:
                return names
    if (root / "classes.txt").is_file():
        return [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    raise BadInput(f"{root}: no class names (data.yaml with names, or classes.txt)")


def read_yolo(images_dir: str | Path, labels_dir: str | Path, classes: list[str]) -> DetectionData:
    """YOLO labels: for images_dir/NAME.EXT, labels_dir/NAME.txt with lines `class cx cy w h` (0..1 of the
    image); an image without a label file has no objects."""
    from PIL import Image

    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if images_dir.is_dir() else []
    if not paths:
        raise BadInput(f"{images_dir}: no images")
    sizes, boxes, labels = [], [], []
    for p in paths:
        try:
            with Image.open(p) as im:   # reads the header only
                w, h = im.size
        except OSError as e:
            raise BadInput(f"{p}: not an image ({e})") from None
        rows = []
        txt = labels_dir / f"{p.stem}.txt"
        if txt.is_file():
            for n, line in enumerate(txt.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    c, cx, cy, bw, bh = int(parts[0]), *(float(v) for v in parts[1:5])
                except (ValueError, IndexError):
                    raise BadInput(f"{txt}:{n}: expected `class cx cy w h`, got {line.strip()!r}") from None
                if not 0 <= c < len(classes):
                    raise BadInput(f"{txt}:{n}: class {c} is not among the {len(classes)} classes")
                rows.append((c, cx, cy, bw, bh))
        a = np.array(rows, np.float64).reshape(-1, 5)
        xyxy = np.stack([(a[:, 1] - a[:, 3] / 2) * w, (a[:, 2] - a[:, 4] / 2) * h,
                         (a[:, 1] + a[:, 3] / 2) * w, (a[:, 2] + a[:, 4] / 2) * h], 1)
        xyxy = np.clip(xyxy, 0, [w, h, w, h])
        keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        sizes.append((h, w))
        boxes.append(xyxy[keep].astype(np.float32))
        labels.append(a[keep, 0].astype(np.int64))
    return DetectionData(paths, sizes, boxes, labels, list(classes), str(images_dir))


def _labels_for(images: Path) -> Path:
    """YOLO's convention: the labels folder is the images folder with its last `images` part made `labels`."""
    parts = list(images.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images.parent / "labels"


def split_off(data: DetectionData, share: float = VAL_SHARE, seed: int = 0) -> tuple[DetectionData, DetectionData]:
    """A seeded random split into (train, val); val gets `share` of the images, at least one."""
    if len(data) < 2:
        raise BadInput(f"{data.source}: {len(data)} image(s); at least 2 are needed to train and validate")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, int(round(share * len(data))))
    return data.subset(sorted(order[n_val:])), data.subset(sorted(order[:n_val]))


@dataclass
class DetectionSplits:
    train: DetectionData
    val: DetectionData
    test: DetectionData | None   # when the folder has one
    layout: str                  # "coco" | "yolo"


def _coco_files(root: Path) -> dict[str, tuple[Path, Path]] | None:
    """{split: (annotations, images folder)} of a COCO folder ("" for a single set), or None if it is not one."""
    found = {}
    for split in ("train", "val", "test"):
        if (root / split / "annotations.json").is_file():
            found[split] = (root / split / "annotations.json", root / split / "images")
    if found:
        return found
    for f in sorted((root / "annotations").glob("instances_*.json")) if (root / "annotations").is_dir() else []:
        split = f.stem[len("instances_"):]
        images = next((d for d in (root / split, root / "images" / split) if d.is_dir()), None)
        kind = next((k for k in ("train", "val", "test") if split.startswith(k)), None)
        if images is not None and kind is not None and kind not in found:
            found[kind] = (f, images)
    if found:
        return found
    if (root / "annotations.json").is_file() and (root / "images").is_dir():
        return {"": (root / "annotations.json", root / "images")}
    return None


def open_detection_dir(path: str | Path, seed: int = 0) -> DetectionSplits:
    """The train, val (and test) sets of a COCO or YOLO folder; without a validation split, 10% of the training
    images (seeded) are held out for it."""
    root = Path(path)
    if not root.is_dir():
        raise BadInput(f"{path}: not a folder (a COCO or YOLO data set)")
    coco = _coco_files(root)
    if coco is not None:
        sets = {k: read_coco(*v) for k, v in coco.items()}
        train = sets.pop("train", None) or sets.pop("", None)
        if train is None:
            raise BadInput(f"{path}: COCO annotations without a training set ({', '.join(sets)})")
        if any(d.classes != train.classes for d in sets.values()):
            raise BadInput(f"{path}: the splits' annotations have different categories")
        if "val" not in sets:
            train, sets["val"] = split_off(train, seed=seed)
        return DetectionSplits(train, sets["val"], sets.get("test"), "coco")
    yaml_file = next((root / n for n in ("data.yaml", "dataset.yaml") if (root / n).is_file()), None)
    if yaml_file is not None or (root / "labels").is_dir():
        classes = yolo_classes(root)
        cfg = _yaml_classes(yaml_file)[1] if yaml_file is not None else {}
        base = root / cfg["path"] if isinstance(cfg.get("path"), str) and (root / cfg["path"]).is_dir() else root
        if isinstance(cfg.get("train"), str):
            t = base / cfg["train"]
            train = read_yolo(t, _labels_for(t), classes)
            held = {}
            for split in ("val", "test"):
                if isinstance(cfg.get(split), str) and (base / cfg[split]).is_dir():
                    held[split] = read_yolo(base / cfg[split], _labels_for(base / cfg[split]), classes)
            if "val" not in held:
                train, held["val"] = split_off(train, seed=seed)
            return DetectionSplits(train, held["val"], held.get("test"), "yolo")
        return DetectionSplits(*split_off(read_yolo(root / "images", root / "labels", classes), seed=seed), None,
                               "yolo")
    raise BadInput(f"{path}: neither a COCO folder (train/annotations.json, annotations/instances_*.json or "
                   f"annotations.json + images/) nor a YOLO one (data.yaml or classes.txt, images/ and labels/)")
