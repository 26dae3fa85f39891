"""Detection mAP by pycocotools' COCOeval, the reference implementation: mAP@[.5:.95] and mAP@.5 (all areas,
at most 100 detections an image)."""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

from ..errors import BadInput


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1).tolist()


def coco_map(sizes: Sequence[tuple[int, int]], gt_boxes: Sequence[np.ndarray], gt_labels: Sequence[np.ndarray],
             pred_boxes: Sequence[np.ndarray], pred_scores: Sequence[np.ndarray], pred_labels: Sequence[np.ndarray],
             n_classes: int) -> dict[str, float]:
    """{"map": mAP@[.5:.95], "map50": mAP@.5} of per-image predictions (x0, y0, x1, y1 pixel boxes, scores,
    class indices 0..n_classes-1) against per-image ground truth, for images of sizes [(height, width)]."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise BadInput("detection mAP needs pycocotools: pip install pycocotools") from None
    if not (len(sizes) == len(gt_boxes) == len(gt_labels) == len(pred_boxes) == len(pred_scores)
            == len(pred_labels)):
        raise BadInput("coco_map: one entry per image is needed in every argument")
    images, annotations, results = [], [], []
    for i, (h, w) in enumerate(sizes):
        images.append({"id": i + 1, "width": int(w), "height": int(h)})
        for box, label in zip(_xywh(gt_boxes[i]), np.asarray(gt_labels[i]).tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        for box, score, label in zip(_xywh(pred_boxes[i]), np.asarray(pred_scores[i]).tolist(),
                                     np.asarray(pred_labels[i]).tolist()):
            results.append({"image_id": i + 1, "category_id": int(label) + 1, "bbox": box, "score": float(score)})
    if not annotations:
        raise BadInput("coco_map: the ground truth has no objects")
    if not results:
        return {"map": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):   # pycocotools prints its progress and its table
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": max(float(ev.stats[0]), 0.0), "map50": max(float(ev.stats[1]), 0.0)}
