"""DETR's image preprocessing and detection post-processing, equal to transformers' DetrImageProcessor (PIL)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import BadInput
from .boxes import cxcywh_to_xyxy

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resized_size(height: int, width: int, shortest_edge: int = 800, longest_edge: int = 1333) -> tuple[int, int]:
    """(h, w) keeping the aspect ratio, the short side `shortest_edge` unless the long side would pass
    `longest_edge` (then the long side is about `longest_edge`); rounding as transformers does."""
    size, raw = shortest_edge, None
    lo, hi = float(min(height, width)), float(max(height, width))
    if hi / lo * size > longest_edge:
        raw = longest_edge * lo / hi
        size = int(round(raw))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    if width < height:
        return int((raw if raw is not None else size) * height / width), size
    return size, int((raw if raw is not None else size) * width / height)


def preprocess(images: Sequence, shortest_edge: int = 800, longest_edge: int = 1333) -> tuple[Tensor, Tensor]:
    """pixel_values [B, 3, H, W] float32 and pixel_mask [B, H, W] int64 (1 on the image, 0 on padding) for RGB
    images (PIL images or uint8 arrays [h, w, 3]): bilinear resize (see `resized_size`), scale to 0..1,
    ImageNet mean/std normalisation, zero padding at the bottom and right to the batch's largest size."""
    from PIL import Image

    mean, std = np.array(IMAGENET_MEAN, dtype=np.float32), np.array(IMAGENET_STD, dtype=np.float32)
    arrays = []
    for image in images:
        if not isinstance(image, Image.Image):
            a = np.asarray(image)
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                raise BadInput(f"an image must be a PIL image or a uint8 array [h, w, 3], not {a.dtype} {a.shape}")
            image = Image.fromarray(a)
        image = image.convert("RGB")
        h, w = resized_size(image.height, image.width, shortest_edge, longest_edge)
        if (h, w) != (image.height, image.width):
            image = image.resize((w, h), resample=Image.BILINEAR)
        x = (np.asarray(image).astype(np.float64) * (1 / 255)).astype(np.float32)
        arrays.append(((x - mean) / std).transpose(2, 0, 1))
    if not arrays:
        raise BadInput("no images to preprocess")
    H, W = max(a.shape[1] for a in arrays), max(a.shape[2] for a in arrays)
    pixel_values = torch.zeros(len(arrays), 3, H, W)
    pixel_mask = torch.zeros(len(arrays), H, W, dtype=torch.int64)
    for i, a in enumerate(arrays):
        pixel_values[i, :, :a.shape[1], :a.shape[2]] = torch.from_numpy(a)
        pixel_mask[i, :a.shape[1], :a.shape[2]] = 1
    return pixel_values, pixel_mask


def post_process(logits: Tensor, boxes: Tensor, target_sizes: Tensor | Sequence[tuple[int, int]] | None = None,
                 threshold: float = 0.5) -> list[dict[str, Tensor]]:
    """Per image {"scores", "labels", "boxes"}: the queries whose best real class (softmax, "no object" dropped)
    scores above `threshold`, boxes as x0, y0, x1, y1 — in pixels of target_sizes [(height, width), ...]
    when given, else relative to the image."""
    if target_sizes is not None and len(target_sizes) != len(logits):
        raise BadInput(f"{len(target_sizes)} target sizes for a batch of {len(logits)} images")
    scores, labels = logits.softmax(-1)[..., :-1].max(-1)
    xyxy = cxcywh_to_xyxy(boxes)
    if target_sizes is not None:
        h, w = torch.as_tensor(target_sizes).to(device=xyxy.device, dtype=xyxy.dtype).unbind(1)
        xyxy = xyxy * torch.stack([w, h, w, h], dim=1)[:, None, :]
    return [{"scores": s[s > threshold], "labels": lab[s > threshold], "boxes": b[s > threshold]}
            for s, lab, b in zip(scores, labels, xyxy)]
