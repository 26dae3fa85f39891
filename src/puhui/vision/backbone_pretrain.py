"""Pre-training a detector's backbone on its own training data: classify crops of the annotated objects (and
of background) before the detector trains.

DETR starts from an ImageNet-trained backbone; no package ships one, and from scratch DETR's set loss teaches
the backbone what an object *is* long before it teaches it which class it is (the box losses dominate the
gradient). Classifying object crops is the same task with the class signal alone and no matching: a few
thousand crops take a backbone from nothing to telling the classes apart, which then transfers to the
detector's cells. Crops are jittered (shifted and scaled by up to a fifth) so the features do not depend on a
digit sitting exactly in the middle; background crops are windows that overlap no object much.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..data.detection import DetectionData
from ..models.detr import Detr
from ..progress import ProgressFn
from .boxes import box_iou
from .detr_processing import DetrPreprocessor, open_rgb

MAX_OBJECTS = 20000          # crops of at most this many objects (a random sample of a larger set)


def crop_size(data: DetectionData, image_size: int) -> int:
    """The median object side once the images are resized to image_size (16..64): the scale the backbone will
    see objects at in the detector."""
    sides = [np.sqrt((b[:, 2] - b[:, 0]) * image_size / w * (b[:, 3] - b[:, 1]) * image_size / h)
             for b, (h, w) in zip(data.boxes, data.sizes) if len(b)]
    return int(np.clip(np.median(np.concatenate(sides)), 16, 64)) if sides else 32


def object_crops(data: DetectionData, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """uint8 crops [N, 3, size, size] and labels [N]: every object once (jittered), and half as many background
    windows labelled len(data.classes)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    crops, labels, n_obj = [], [], 0
    for i in order:
        if n_obj >= MAX_OBJECTS:
            break
        boxes = data.boxes[i]
        if not len(boxes):
            continue
        image = open_rgb(data.images[i])
        W, H = image.size
        windows = []
        for (x0, y0, x1, y1), label in zip(boxes, data.labels[i]):
            side = max(x1 - x0, y1 - y0) * rng.uniform(1.0, 1.25)
            cx = (x0 + x1) / 2 + rng.uniform(-0.2, 0.2) * (x1 - x0)
            cy = (y0 + y1) / 2 + rng.uniform(-0.2, 0.2) * (y1 - y0)
            windows.append(((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), int(label)))
        gt = torch.as_tensor(boxes, dtype=torch.float32)
        for _ in range((len(boxes) + 1) // 2):       # background: a window of an object's size, overlapping little
            side = float(max(1.0, rng.choice(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))))
            for _try in range(10):
                x, y = rng.uniform(0, max(W - side, 1)), rng.uniform(0, max(H - side, 1))
                win = torch.tensor([[x, y, x + side, y + side]])
                if box_iou(win, gt)[0].max() < 0.1:
                    windows.append(((x, y, x + side, y + side), len(data.classes)))
                    break
        for box, label in windows:
            crop = image.crop(tuple(int(round(v)) for v in box)).resize((size, size), Image.BILINEAR)
            crops.append(np.asarray(crop, np.uint8).transpose(2, 0, 1))
            labels.append(label)
        n_obj += len(boxes)
    if not crops:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    return torch.from_numpy(np.stack(crops)), torch.tensor(labels, dtype=torch.int64)


class CropClassifier(nn.Module):
    """The detector's backbone, global average pooling, one linear layer (objects' classes + background). Crops
    (uint8) are normalised as the detector's own processing does (DetrPreprocessor.normalize)."""

    def __init__(self, detector: Detr):
        super().__init__()
        c = detector.config
        self.backbone = detector.backbone
        self.head = nn.Linear(c.stage_dims[c.feature_stage - 1], c.num_classes + 1)
        self.processor = DetrPreprocessor()

    def forward(self, crops: Tensor) -> Tensor:
        return self.head(self.backbone(self.processor.normalize(crops)).mean((2, 3)))


def pretrain_backbone(detector: Detr, train: DetectionData, val: DetectionData, image_size: int, *, epochs: int = 2,
                      batch_size: int = 32, lr: float = 1e-3, seed: int = 0, out_dir: str | None = None,
                      resume: bool = False, progress: ProgressFn | None = None) -> dict:
    """Train detector.backbone in place as a crop classifier (through the Trainer, whose bars and "Epoch N" messages
    go to `progress`); {"crops", "crop_size", "val_accuracy"} of the validation objects' crops."""
    from torch.utils.data import TensorDataset

    from ..train import TrainConfig, fit

    size = crop_size(train, image_size)
    x, y = object_crops(train, size, seed)
    vx, vy = object_crops(val, size, seed + 1)
    model = CropClassifier(detector)

    def loss_fn(m, batch):
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    def evaluate(m, batches):
        right = total = 0
        for xb, yb in batches:
            right += int((m(xb).argmax(-1) == yb).sum())
            total += len(yb)
        return {"accuracy": right / max(total, 1)}

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adamw", weight_decay=1e-4, seed=seed,
                      out_dir=out_dir, resume=resume, monitor="val_accuracy", monitor_mode="max")
    result = fit(model, loss_fn, TensorDataset(x, y), cfg, val_data=TensorDataset(vx, vy) if len(vy) else None,
                 evaluate=evaluate if len(vy) else None, progress=progress)
    last = result.history[-1] if result.history else {}
    return {"crops": len(y), "crop_size": size, "val_accuracy": last.get("val_accuracy")}
