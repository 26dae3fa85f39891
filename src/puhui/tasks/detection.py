"""Object detection: the Detector task object (what `puhui.load` gives for a detection model), and `train_detr`,
which trains puhui's own small DETR (on its synthetic digits by default, or on a COCO or YOLO folder), evaluates
it with pycocotools and saves it to the store.

A Detector answers from either kind of store folder: one puhui trained (config.json: our DetrConfig and
image_size) or a Hugging Face DETR checkpoint imported with `puhui models import` (config.json of model_type
detr, transformers' tensor names, labels from id2label). Its images are processed as the folder says
(preprocessor_config.json; without one, DETR's defaults, or the square image_size of an older puhui run), by the
one processing stack that training shares: puhui.vision.detr_processing. Inference never imports the training
code (puhui.vision.detr_train), which train_detr imports when it runs.

No package ships COCO detection weights, so the default detector, `detr-synthetic`, is one puhui trains itself:
see puhui.vision.detr_train for the recipe and why it converges on a CPU.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from .. import store
from ..atomic import atomic_write
from ..errors import BadCheckpoint, BadInput, Unsupported
from ..models.detr import Detr, DetrConfig, prepare_for_inference
from ..progress import ProgressFn, say
from ..settings import get_settings
from ..vision.detr_processing import DetrPreprocessor, objects, open_rgb

if TYPE_CHECKING:
    from ..data.detection import DetectionSplits

TASK = "detection"
DEFAULT_NAME = "detr-synthetic"
SYNTHETIC = ("synthetic", "synthetic-digits", "digits")


def synthetic_spec(n_train: int = 2000, seed: int = 0):
    """The synthetic set with n_train training images; validation and test get an eighth as many (20..250)."""
    from ..data.synthetic_detection import SyntheticSpec

    if n_train < 1:
        raise BadInput(f"the synthetic set needs at least 1 training image, not {n_train}")
    held = min(250, max(20, n_train // 8))
    return SyntheticSpec(n_train=n_train, n_val=held, n_test=held, seed=seed)


def load_detection_data(data: Optional[str], n_train: int = 2000, seed: int = 0,
                        progress: Optional[ProgressFn] = None) -> tuple[DetectionSplits, str, str]:
    """(splits, source, label) of the synthetic set (data None or "synthetic") or of a COCO / YOLO folder."""
    from ..data.detection import open_detection_dir

    if data is None or data.lower() in SYNTHETIC:
        from ..data.synthetic_detection import synthetic_detection

        spec = synthetic_spec(n_train, seed)
        t0 = time.perf_counter()
        folder = synthetic_detection(spec)
        say(progress, f"synthetic digits: {folder} ({time.perf_counter() - t0:.1f} s)")
        return open_detection_dir(folder), f"synthetic:{spec.name}", "synthetic digits"
    splits = open_detection_dir(data, seed=seed)
    return splits, f"{splits.layout}:{Path(data).resolve()}", str(data)


def train_detr(data: Optional[str] = None, *, epochs: int = 20, batch_size: int = 16, lr: float = 1e-3,
               image_size: int = 128, train_images: int = 2000, pretrain_epochs: int = 4, flip: Optional[bool] = None,
               name: Optional[str] = None, seed: int = 0, resume: bool = False, patience: Optional[int] = None,
               progress: Optional[ProgressFn] = None) -> dict:
    """Pre-train the backbone on crops of the training objects (pretrain_epochs, 0 to skip), train the small DETR,
    evaluate it with pycocotools on the test split (the validation split when the data has none), save it to the
    store (with its preprocessor_config.json); return the numbers. `flip`: horizontal flips in training (default:
    on, except for the synthetic digits, which a mirror turns into other shapes). Bars and messages (what data,
    each epoch's loss, the backbone's accuracy) go to `progress`."""
    from ..vision import detr_train as dt

    if epochs < 1 or batch_size < 1 or lr <= 0 or image_size < 32 or pretrain_epochs < 0:
        raise BadInput("epochs, batch size and learning rate must be positive, pretrain epochs not negative, and "
                       "the image size at least 32")
    synthetic = data is None or data.lower() in SYNTHETIC
    name = name or (DEFAULT_NAME if synthetic else f"{Path(str(data)).name}-detr")
    store.check_name(name)
    splits, source, label = load_detection_data(data, train_images, seed, progress)
    train, val = splits.train, splits.val
    test = splits.test if splits.test is not None else val
    if train.n_objects == 0:
        raise BadInput(f"{label}: the training images have no objects")
    if test.n_objects == 0:
        raise BadInput(f"{label}: the {'test' if splits.test else 'validation'} images have no objects")
    flip = (not synthetic) if flip is None else flip
    recipe = dt.Recipe(image_size=image_size)
    config = dt.detr_config(recipe, train.classes, max((len(b) for b in train.boxes), default=0))
    say(progress, f"data: {label} ({splits.layout}): {len(train)}/{len(val)}/{len(test)} images (train/val/"
        f"{'test' if splits.test else 'val'}), {train.n_objects} training objects, {len(train.classes)} classes; "
        f"model: conditional DETR, two-stage, {config.num_queries} queries, {image_size} px")

    torch.manual_seed(seed)
    model = Detr(config)
    run_dir = get_settings().runs_dir / name
    t0 = time.perf_counter()
    pre = None
    if pretrain_epochs:
        from ..vision.backbone_pretrain import pretrain_backbone

        pre = pretrain_backbone(model, train, val, image_size, epochs=pretrain_epochs, seed=seed,
                                out_dir=str(run_dir / "backbone"), resume=resume, progress=_named(progress, "backbone"))
        say(progress, f"backbone pre-trained on {pre['crops']} crops of {pre['crop_size']} px: validation accuracy "
            f"{pre['val_accuracy']}")
    steps = epochs * math.ceil(len(train) / batch_size)
    from ..train import TrainConfig, fit

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adamw", weight_decay=1e-4,
                      schedule="cosine", warmup_steps=min(100, steps // 10), clip_grad_norm=0.1, seed=seed,
                      out_dir=str(run_dir), resume=resume, early_stopping_patience=patience,
                      monitor="val_map50", monitor_mode="max")
    result = fit(model, dt.loss_fn, dt.DetectionDataset(train, image_size, augment=True, flip=flip), cfg,
                 val_data=dt.DetectionDataset(val, image_size), collate_fn=dt.collate,
                 evaluate=lambda m, batches: dt.evaluate_batches(m, batches, image_size), progress=progress)
    train_s = time.perf_counter() - t0
    model.eval()
    metrics = dt.evaluate_on(model, test, image_size)

    from safetensors.torch import save

    config_dict = {**asdict(config), "image_size": image_size}
    files: dict[str, bytes | Path] = {
        "model.safetensors": save({k: v.contiguous() for k, v in model.state_dict().items()}),
        "config.json": json.dumps(config_dict, indent=2).encode(),
        "preprocessor_config.json": json.dumps(DetrPreprocessor.square(image_size).to_hf(), indent=2).encode()}
    if "plot" in result.paths:
        files["loss_curve.png"] = result.paths["plot"]
    res = {
        "model": name, "data": source, "layout": splits.layout, "classes": train.classes,
        "train_images": len(train), "val_images": len(val), "eval_split": "test" if splits.test else "val",
        "eval_images": len(test), "map50": metrics["map50"], "map": metrics["map"],
        "val_map50_best": result.best, "best_epoch": result.best_epoch, "epochs": epochs,
        "epochs_run": len(result.history), "stopped_early": result.stopped_early, "train_s": round(train_s, 1),
        "image_size": image_size, "queries": config.num_queries, "run_dir": str(run_dir),
        "backbone_pretrain": pre,
        "evaluator": "pycocotools COCOeval (bbox): map = mAP@[.5:.95], map50 = mAP@.5",
    }
    files["metrics.json"] = json.dumps(res, indent=2).encode()
    card = (f"A conditional two-stage DETR ({config.num_queries} queries, {image_size} px, ResNet "
            f"{list(config.stage_dims)} from scratch) trained by puhui on {label} for {len(result.history)} epochs. "
            f"pycocotools on {len(test)} held-out images: mAP@.5 {metrics['map50']:.3f}, "
            f"mAP@[.5:.95] {metrics['map']:.3f}.")
    store.save_model(name, TASK, "detr", "safetensors", files, source=source, card=card, main="model.safetensors",
                     extra={"classes": train.classes, "image_size": image_size, "variant": "conditional-two-stage",
                            "metrics": {k: res[k] for k in ("map50", "map", "eval_split", "eval_images")}})
    return res


def _named(progress: Optional[ProgressFn], phase: str) -> Optional[ProgressFn]:
    """The progress callback with the phase in front of each task name ("backbone epoch 2/4")."""
    if progress is None:
        return None
    from dataclasses import replace
    return lambda p: progress(replace(p, task=f"{phase} {p.task}"))


class Detector:
    """A detector from the store: `detect(image, threshold)`, `draw(image, detections, path)`; `open_image` for a
    door that must refuse a non-image or an oversized one before detecting."""

    task = TASK

    def __init__(self, manifest, **options):
        from ..formats.safetensors import load_state_dict
        from ..models.checkpoint import build
        from ..models.detr import from_hf_state_dict

        if options:
            raise Unsupported(f"a detection model takes no load options (got {', '.join(options)})")
        self.manifest, self.name = manifest, manifest.name
        where = f"model {self.name!r}"
        d = _json(manifest, "config.json", where)
        hf = "model_type" in d                   # a Hugging Face checkpoint; else one of puhui's runs
        try:
            self.config = DetrConfig.from_hf(d) if hf else _config(d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BadCheckpoint(f"{where}: config.json does not describe a DETR ({type(e).__name__}: {e})") from None
        self.processor = _processor(manifest, d, where)
        self.classes = list(self.config.labels)
        weights = load_state_dict(_weights_path(manifest, where))
        try:
            model = build(Detr, self.config, from_hf_state_dict(weights) if hf else weights, where=where)
        except (RuntimeError, ValueError, TypeError) as e:   # a config no DETR can be built on
            raise BadCheckpoint(f"{where}: cannot build the DETR of its config.json ({e})") from None
        self.model = prepare_for_inference(model)

    def open_image(self, image, max_pixels: int | None = None, param: str | None = None):
        """The RGB image of a path, bytes, a PIL image or a uint8 array [h, w, 3], decoded whole; BadInput (about
        `param`, with a code) when it is no image, truncated or corrupt ("invalid_image"), or has more than
        max_pixels pixels or more than its file's size accounts for ("image_too_large": checked from its header,
        before decoding; vision.detr_processing.open_rgb), or too thin to resize to the model's input."""
        im = open_rgb(image, max_pixels, param)
        self.processor.resized(im.height, im.width, param)
        return im

    def detect(self, image, threshold: float = 0.7) -> list[dict]:
        """Objects scoring above threshold, best first: {"label", "score", "box": [x0, y0, x1, y1] in pixels,
        clipped to the image}. `image`: a path, bytes, a PIL image or a uint8 array [h, w, 3]."""
        if not 0 <= threshold <= 1:
            raise BadInput(f"threshold must be in [0, 1], not {threshold}", param="threshold")
        im = open_rgb(image)
        pixels, mask = self.processor.preprocess([im])
        with torch.inference_mode():
            logits, boxes = self.model(pixels, mask)
        return objects(logits, boxes, [(im.height, im.width)], self.classes, threshold)[0]

    def draw(self, image, detections: list[dict], path: str | Path) -> Path:
        """Write the image with each detection's box and "label score" to path as PNG (atomically)."""
        from PIL import ImageDraw

        im = open_rgb(image)
        draw = ImageDraw.Draw(im)
        width = max(1, round(max(im.size) / 200))
        for i, det in enumerate(detections):
            colour = PALETTE[i % len(PALETTE)]
            x0, y0, x1, y1 = det["box"]
            draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
            text = f"{det['label']} {det['score']:.2f}"
            tx, ty = x0, max(0, y0 - 11)
            draw.rectangle(draw.textbbox((tx, ty), text), fill=colour)
            draw.text((tx, ty), text, fill=(0, 0, 0))
        return atomic_write(Path(path), lambda tmp: im.save(tmp, format="PNG"))


PALETTE = [(255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (255, 64, 255), (0, 220, 220)]


def _config(d: dict) -> DetrConfig:
    """The DetrConfig of one of puhui's own runs (its config.json: the dataclass's fields and image_size)."""
    known = {k: v for k, v in d.items() if k in DetrConfig.__dataclass_fields__}
    for k, v in known.items():
        if isinstance(v, list):
            known[k] = tuple(v)
    return DetrConfig(**known)


def _json(manifest, filename: str, where: str) -> dict:
    try:
        d = json.loads(manifest.path(filename).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadCheckpoint(f"{where}: {filename} is not JSON ({e})") from None
    if not isinstance(d, dict):
        raise BadCheckpoint(f"{where}: {filename} is not a JSON object")
    return d


def _processor(manifest, config: dict, where: str) -> DetrPreprocessor:
    """The folder's own image processing: its preprocessor_config.json; else the square image_size of a puhui run
    from before it wrote one; else DETR's defaults (those of transformers' DetrImageProcessor)."""
    if manifest.has("preprocessor_config.json"):
        return DetrPreprocessor.from_hf(_json(manifest, "preprocessor_config.json", where),
                                        where=f"{where}: preprocessor_config.json")
    if "image_size" in config:
        try:
            return DetrPreprocessor.square(int(config["image_size"]))
        except (TypeError, ValueError):
            raise BadCheckpoint(f"{where}: config.json's image_size {config['image_size']!r} is not a number") \
                from None
    return DetrPreprocessor()


def _weights_path(manifest, where: str) -> Path:
    """The safetensors weights: the main file, or the folder of a sharded checkpoint's index."""
    path = manifest.path()
    if path.name.endswith(".safetensors.index.json"):
        return path.parent
    if path.suffix != ".safetensors":
        raise Unsupported(f"{where}: its weights are {path.name}; puhui reads DETR weights from safetensors")
    return path
