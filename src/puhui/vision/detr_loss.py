"""DETR's set-prediction loss: Hungarian matching of queries to targets, then cross-entropy (no-object
down-weighted), L1 and generalized-IoU box losses, summed over the decoder layers when given all of them.

Targets are per image {"class_labels": int64 [n], "boxes": float [n, 4] as cx, cy, w, h in 0..1}, the
layout of transformers' DETR labels.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import BadInput
from .boxes import cxcywh_to_xyxy, generalized_box_iou

if TYPE_CHECKING:
    from ..models.detr import DetrConfig


@torch.no_grad()
def hungarian_match(logits: Tensor, boxes: Tensor, targets: list[dict], class_cost: float = 1.0,
                    bbox_cost: float = 5.0, giou_cost: float = 2.0) -> list[tuple[Tensor, Tensor]]:
    """Per image, (query indices, target indices) of the one-to-one assignment of least total cost
    bbox_cost * L1 - class_cost * p(target class) - giou_cost * GIoU; NaN/inf costs match last."""
    from scipy.optimize import linear_sum_assignment

    matches = []
    for b, t in enumerate(targets):
        prob = logits[b].softmax(-1)
        cost = (bbox_cost * torch.cdist(boxes[b], t["boxes"], p=1) + class_cost * -prob[:, t["class_labels"]]
                + giou_cost * -generalized_box_iou(cxcywh_to_xyxy(boxes[b]), cxcywh_to_xyxy(t["boxes"])))
        big = torch.finfo(cost.dtype).max
        i, j = linear_sum_assignment(torch.nan_to_num(cost, nan=big, posinf=big, neginf=big).cpu())
        matches.append((torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)))
    return matches


def _check(targets: list[dict], batch: int) -> None:
    if len(targets) != batch:
        raise BadInput(f"{len(targets)} targets for a batch of {batch} images")
    for t in targets:
        if "class_labels" not in t or "boxes" not in t:
            raise BadInput("a DETR target needs 'class_labels' and 'boxes'")
        if t["boxes"].shape != (len(t["class_labels"]), 4):
            raise BadInput(f"target boxes of shape {tuple(t['boxes'].shape)} for {len(t['class_labels'])} labels")


def detr_loss(logits: Tensor, boxes: Tensor, targets: list[dict], config: DetrConfig) -> tuple[Tensor, dict]:
    """(total loss, its parts) for logits [B, Q, C+1] and boxes [B, Q, 4] of `Detr`, or for its per-decoder-layer
    stacks [L, B, Q, ...] (`aux=True`): each layer is matched on its own and adds
    loss_ce + bbox_loss_coefficient * loss_bbox + giou_loss_coefficient * loss_giou; the box losses are divided
    by the number of target boxes. Parts are named as transformers names them (loss_ce, loss_bbox_0 ...)."""
    if logits.dim() == 3:
        logits, boxes = logits[None], boxes[None]
    L, B, Q, C1 = logits.shape
    _check(targets, B)
    targets = [{"class_labels": t["class_labels"].to(logits.device),
                "boxes": t["boxes"].to(device=logits.device, dtype=boxes.dtype)} for t in targets]
    num_boxes = max(sum(len(t["class_labels"]) for t in targets), 1)
    weight = torch.ones(C1, device=logits.device, dtype=logits.dtype)
    weight[-1] = config.eos_coefficient
    total, parts = logits.new_zeros(()), {}
    for layer in range(L):
        matches = hungarian_match(logits[layer], boxes[layer], targets,
                                  config.class_cost, config.bbox_cost, config.giou_cost)
        image = torch.cat([torch.full_like(i, b) for b, (i, _) in enumerate(matches)]).to(logits.device)
        query = torch.cat([i for i, _ in matches]).to(logits.device)
        matched = [(t, j.to(logits.device)) for t, (_, j) in zip(targets, matches)]
        classes = torch.full((B, Q), C1 - 1, dtype=torch.int64, device=logits.device)
        classes[image, query] = torch.cat([t["class_labels"][j] for t, j in matched])
        ce = F.cross_entropy(logits[layer].transpose(1, 2), classes, weight)
        predicted, wanted = boxes[layer][image, query], torch.cat([t["boxes"][j] for t, j in matched])
        l1 = F.l1_loss(predicted, wanted, reduction="none").sum() / num_boxes
        giou = 1 - torch.diag(generalized_box_iou(cxcywh_to_xyxy(predicted), cxcywh_to_xyxy(wanted)))
        giou = giou.sum() / num_boxes
        suffix = "" if layer == L - 1 else f"_{layer}"
        parts.update({f"loss_ce{suffix}": ce, f"loss_bbox{suffix}": l1, f"loss_giou{suffix}": giou})
        total = total + ce + config.bbox_loss_coefficient * l1 + config.giou_loss_coefficient * giou
    return total, parts


def dense_loss(logits: Tensor, boxes: Tensor, centres: Tensor, mask: Tensor, targets: list[dict],
               config: DetrConfig) -> Tensor:
    """A one-to-many auxiliary loss on every encoder cell's proposal (logits [B, N, C+1], boxes [B, N, 4] cx, cy,
    w, h; cell centres [N, 2]; mask [B, N] True on the image), as Co-DETR's auxiliary heads and FCOS assign:
    a cell whose centre lies inside a target box is a positive of that box (of the smallest such box), and so is
    the cell nearest each box's centre; every other cell is "no object". Cross-entropy (no-object weighted by
    eos_coefficient) over the image's cells, plus the weighted L1 and GIoU box losses over the positives."""
    B, N, C1 = logits.shape
    _check(targets, B)
    classes = torch.full((B, N), C1 - 1, dtype=torch.int64, device=logits.device)
    pred, want = [], []
    for b, t in enumerate(targets):
        gt = t["boxes"].to(device=logits.device, dtype=boxes.dtype)
        if len(gt) == 0:
            continue
        xyxy = cxcywh_to_xyxy(gt)
        inside = ((centres[:, None, :] > xyxy[None, :, :2]) & (centres[:, None, :] < xyxy[None, :, 2:])).all(-1)
        inside[torch.cdist(gt[:, :2], centres).argmin(1), torch.arange(len(gt), device=logits.device)] = True
        inside &= mask[b, :, None]
        area = (gt[:, 2] * gt[:, 3])[None].expand(N, -1).masked_fill(~inside, float("inf"))
        cell = inside.any(1).nonzero()[:, 0]
        which = area[cell].argmin(1)
        classes[b, cell] = t["class_labels"].to(logits.device)[which]
        pred.append(boxes[b, cell])
        want.append(gt[which])
    weight = torch.ones(C1, device=logits.device, dtype=logits.dtype)
    weight[-1] = config.eos_coefficient
    ce = F.cross_entropy(logits[mask], classes[mask], weight)
    if not pred:
        return ce
    predicted, wanted = torch.cat(pred), torch.cat(want)
    n = max(len(predicted), 1)
    l1 = F.l1_loss(predicted, wanted, reduction="none").sum() / n
    giou = (1 - torch.diag(generalized_box_iou(cxcywh_to_xyxy(predicted), cxcywh_to_xyxy(wanted)))).sum() / n
    return ce + config.bbox_loss_coefficient * l1 + config.giou_loss_coefficient * giou
