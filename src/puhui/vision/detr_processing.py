"""DETR's one processing stack, shared by training (puhui.vision.detr_train), the Detector task and, through it,
the server: open an image (`open_rgb`), make the model's pixels of it (`DetrPreprocessor`), and make objects of
the model's logits and boxes (`post_process`, `objects`).

`DetrPreprocessor` holds the settings of transformers' DetrImageProcessor and computes what its PIL backend
computes: a Hugging Face checkpoint's preprocessor_config.json is read by `from_hf`; a folder without one gets
DETR's defaults (the short side 800 pixels, the long side at most 1333, ImageNet mean and std). puhui's own
detectors are trained at a fixed square size (`square`), which their run writes as their preprocessor_config.json
(`to_hf`), so that one reader serves both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..errors import BadCheckpoint, BadInput, Unsupported
from .boxes import cxcywh_to_xyxy

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BILINEAR = 2                                   # PIL's number for its bilinear filter, as configs write it
SIZE_KEYS = ({"shortest_edge", "longest_edge"}, {"shortest_edge"}, {"height", "width"}, {"max_height", "max_width"})


def open_rgb(image, max_pixels: int | None = None):
    """A PIL RGB image from a path, bytes, a PIL image or a uint8 array [h, w, 3]; BadInput when it is not an
    image, or when it has more than max_pixels pixels (read from the header before anything is decoded: a
    decompression bomb; default PIL's own limit)."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise BadInput(f"an image array must be uint8 [h, w, 3], not {image.dtype} {image.shape}")
        return Image.fromarray(image)
    what = "the image" if isinstance(image, (bytes, bytearray)) else str(image)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image) as im:
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    raise BadInput(f"{what}: {w}x{h} is {w * h:,} pixels, more than the {max_pixels:,} allowed "
                                   "(a decompression bomb?)")
                return im.convert("RGB")
    except FileNotFoundError:
        raise BadInput(f"{what}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadInput(f"{what}: too many pixels, a decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadInput(f"{what}: not an image ({e})") from None


def resized_size(height: int, width: int, shortest_edge: int = 800, longest_edge: int | None = 1333) -> tuple[int, int]:
    """(h, w) keeping the aspect ratio, the short side `shortest_edge` unless the long side would pass
    `longest_edge` (then the long side is about `longest_edge`); rounding as transformers does."""
    size, raw = shortest_edge, None
    lo, hi = float(min(height, width)), float(max(height, width))
    if longest_edge is not None and hi / lo * size > longest_edge:
        raw = longest_edge * lo / hi
        size = int(round(raw))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    if width < height:
        return int((raw if raw is not None else size) * height / width), size
    return size, int((raw if raw is not None else size) * width / height)


@dataclass(frozen=True)
class DetrPreprocessor:
    """How images become a DETR's input: transformers' DetrImageProcessor settings (its defaults here).

    size, as transformers writes it: {"shortest_edge", "longest_edge"} (keep the aspect ratio, the short side
    shortest_edge unless the long side would pass longest_edge; shortest_edge alone: no limit), {"height",
    "width"} (exactly that), or {"max_height", "max_width"} (keep the aspect ratio, as large as fits). Then the
    pixels are rescaled (times rescale_factor), normalised ((x - mean) / std), and the images of a batch padded
    with zeros at the bottom and right to the largest one (or to pad_size {"height", "width"})."""

    size: dict = field(default_factory=lambda: {"shortest_edge": 800, "longest_edge": 1333})
    do_resize: bool = True
    resample: int = BILINEAR
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD
    do_pad: bool = True
    pad_size: dict | None = None

    def __post_init__(self):
        if self.do_resize and set(self.size) not in SIZE_KEYS:
            raise Unsupported(f"DETR image size {self.size}: use shortest_edge (and longest_edge), height and width, "
                              "or max_height and max_width")
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in self.size.values()):
            raise Unsupported(f"DETR image size {self.size}: every side must be a positive whole number")
        if self.resample not in range(6):
            raise Unsupported(f"resample {self.resample!r}: one of PIL's filters 0..5 (2: bilinear)")
        if self.pad_size is not None and set(self.pad_size) != {"height", "width"}:
            raise Unsupported(f"DETR pad_size {self.pad_size}: use height and width")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or not all(s > 0 for s in self.image_std):
            raise Unsupported(f"image_mean {self.image_mean} and image_std {self.image_std}: three numbers each, "
                              "std above zero")

    @classmethod
    def square(cls, size: int) -> "DetrPreprocessor":
        """Every image resized to size x size (puhui's own detectors)."""
        return cls(size={"height": size, "width": size})

    @classmethod
    def from_hf(cls, config: dict, where: str = "preprocessor_config.json") -> "DetrPreprocessor":
        """From a preprocessor_config.json dict, as transformers reads it: a legacy `size` number with `max_size`
        means {"shortest_edge": size, "longest_edge": max_size (default 1333)}; absent keys take the defaults.
        `where` begins the error messages."""
        if not isinstance(config, dict):
            raise BadCheckpoint(f"{where}: not a JSON object")
        kw: dict = {}
        try:
            size = config.get("size")
            if isinstance(size, (int, float)) and not isinstance(size, bool):
                kw["size"] = {"shortest_edge": int(size), "longest_edge": int(config.get("max_size") or 1333)}
            elif isinstance(size, (list, tuple)) and len(size) == 2:
                kw["size"] = {"height": int(size[0]), "width": int(size[1])}
            elif isinstance(size, dict):
                kw["size"] = {k: int(v) for k, v in size.items() if v is not None}
            elif size is not None:
                raise Unsupported(f"{where}: size {size!r}")
            for key in ("do_resize", "do_rescale", "do_normalize"):
                if key in config:
                    kw[key] = bool(config[key])
            kw["do_pad"] = bool(config.get("do_pad", config.get("pad_and_return_pixel_mask", True)))
            if config.get("resample") is not None:
                kw["resample"] = int(config["resample"])
            if config.get("rescale_factor") is not None:
                kw["rescale_factor"] = float(config["rescale_factor"])
            for key in ("image_mean", "image_std"):
                v = config.get(key)
                if v is not None:
                    kw[key] = tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else (float(v),) * 3
            pad = config.get("pad_size")
            if pad is not None:
                kw["pad_size"] = {k: int(v) for k, v in pad.items()}
        except (TypeError, ValueError, AttributeError) as e:
            raise BadCheckpoint(f"{where}: a setting is not of its type ({e})") from None
        try:
            return cls(**kw)
        except Unsupported as e:
            raise Unsupported(f"{where}: {e}") from None

    def to_hf(self) -> dict:
        """The preprocessor_config.json transformers reads back as this processing."""
        d = asdict(self)
        if d["pad_size"] is None:
            del d["pad_size"]
        d["image_mean"], d["image_std"] = list(self.image_mean), list(self.image_std)
        return {"image_processor_type": "DetrImageProcessor", "format": "coco_detection",
                "do_convert_annotations": self.do_normalize, **d}

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) an image of height x width is resized to."""
        s = self.size
        if not self.do_resize:
            return height, width
        if "shortest_edge" in s:
            return resized_size(height, width, s["shortest_edge"], s.get("longest_edge"))
        if "max_height" in s:
            scale = min(s["max_height"] / height, s["max_width"] / width)
            return int(height * scale), int(width * scale)
        return s["height"], s["width"]

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images [..., 3, H, W] (on any device) as float32 model pixels: rescaled, then normalised (float64
        rescaling, float32 normalisation: transformers' arithmetic)."""
        x = images.double() * self.rescale_factor if self.do_rescale else images
        x = x.float()
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
            std = torch.tensor(self.image_std, dtype=torch.float32, device=x.device).view(3, 1, 1)
            x = (x - mean) / std
        return x

    def preprocess(self, images: Sequence) -> tuple[Tensor, Tensor]:
        """pixel_values [B, 3, H, W] float32 and pixel_mask [B, H, W] int64 (1 on the image, 0 on padding) of
        images (PIL images, uint8 arrays [h, w, 3], paths or bytes)."""
        arrays = []
        for image in images:
            image = open_rgb(image)
            h, w = self.resized(image.height, image.width)
            if (h, w) != (image.height, image.width):
                image = image.resize((w, h), resample=self.resample)
            arrays.append(self.normalize(torch.from_numpy(np.asarray(image, np.uint8).transpose(2, 0, 1).copy())))
        if not arrays:
            raise BadInput("no images to preprocess")
        if self.pad_size is not None:
            H, W = self.pad_size["height"], self.pad_size["width"]
        else:
            H, W = max(a.shape[1] for a in arrays), max(a.shape[2] for a in arrays)
        if any(a.shape[1] > H or a.shape[2] > W for a in arrays) or (
                not self.do_pad and any(a.shape[1:] != (H, W) for a in arrays)):
            raise BadInput(f"images of sizes {[tuple(a.shape[1:]) for a in arrays]} cannot make one batch of "
                           f"{H} x {W}" + ("" if self.do_pad else " without padding (do_pad is off)"))
        pixel_values = torch.zeros(len(arrays), 3, H, W)
        pixel_mask = torch.zeros(len(arrays), H, W, dtype=torch.int64)
        for i, a in enumerate(arrays):
            pixel_values[i, :, :a.shape[1], :a.shape[2]] = a
            pixel_mask[i, :a.shape[1], :a.shape[2]] = 1
        return pixel_values, pixel_mask


def post_process(logits: Tensor, boxes: Tensor, target_sizes: Tensor | Sequence[tuple[int, int]] | None = None,
                 threshold: float = 0.5, clip: bool = False) -> list[dict[str, Tensor]]:
    """Per image {"scores", "labels", "boxes"}: the queries whose best real class (softmax, "no object" dropped)
    scores above `threshold` (a negative one keeps them all), in query order, boxes as x0, y0, x1, y1 — in pixels
    of target_sizes [(height, width), ...] when given, else relative to the image; clip: boxes clipped to the
    image. Without clip, transformers' post_process_object_detection."""
    if target_sizes is not None and len(target_sizes) != len(logits):
        raise BadInput(f"{len(target_sizes)} target sizes for a batch of {len(logits)} images")
    scores, labels = logits.softmax(-1)[..., :-1].max(-1)
    xyxy = cxcywh_to_xyxy(boxes)
    if clip:
        xyxy = xyxy.clamp(0, 1)
    if target_sizes is not None:
        h, w = torch.as_tensor(target_sizes).to(device=xyxy.device, dtype=xyxy.dtype).unbind(1)
        xyxy = xyxy * torch.stack([w, h, w, h], dim=1)[:, None, :]
    return [{"scores": s[s > threshold], "labels": lab[s > threshold], "boxes": b[s > threshold]}
            for s, lab, b in zip(scores, labels, xyxy)]


def objects(logits: Tensor, boxes: Tensor, image_sizes: Sequence[tuple[int, int]], labels: Sequence[str],
            threshold: float = 0.7) -> list[list[dict]]:
    """Per image of (height, width), the objects scoring above threshold, best first: {"label" (its name in
    `labels`), "score", "box": [x0, y0, x1, y1] in the image's pixels, clipped to it}, rounded to 4 decimals."""
    out = []
    for r in post_process(logits.float(), boxes.float(), image_sizes, threshold, clip=True):
        order = r["scores"].argsort(descending=True, stable=True).tolist()
        out.append([{"label": _name(labels, int(r["labels"][i])), "score": round(float(r["scores"][i]), 4),
                     "box": [round(float(v), 4) for v in r["boxes"][i]]} for i in order])
    return out


def _name(labels: Sequence[str], i: int) -> str:
    return labels[i] if i < len(labels) else f"LABEL_{i}"
