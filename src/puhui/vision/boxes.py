"""Bounding boxes: (cx, cy, w, h) <-> (x0, y0, x1, y1), pairwise IoU and generalized IoU (as DETR's box_ops)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import BadInput


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU [N, M] and union areas [N, M] of xyxy boxes a [N, 4] and b [M, 4]."""
    area_a, area_b = box_area(a), box_area(b)
    wh = (torch.min(a[:, None, 2:], b[:, 2:]) - torch.max(a[:, None, :2], b[:, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b - inter
    return inter / union, union


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise generalized IoU [N, M] of xyxy boxes: IoU minus the share of the enclosing box neither covers."""
    for boxes in (a, b):
        if not (boxes[:, 2:] >= boxes[:, :2]).all():
            raise BadInput("boxes must have x1 >= x0 and y1 >= y0 (and no NaN)")
    iou, union = box_iou(a, b)
    wh = (torch.max(a[:, None, 2:], b[:, 2:]) - torch.min(a[:, None, :2], b[:, :2])).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing
