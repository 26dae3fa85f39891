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

import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import BadCheckpoint, BadInput, Unsupported
from .boxes import cxcywh_to_xyxy

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BILINEAR = 2                                   # PIL's number for its bilinear filter, as configs write it
SIZE_KEYS = ({"shortest_edge", "longest_edge"}, {"shortest_edge"}, {"height", "width"}, {"max_height", "max_width"})


# Decoding is bounded relative to the upload (`open_rgb`'s max_pixels, a door's limits): any image may have up to
# FREE_PIXELS pixels (decoding 4 MP costs some 40 ms here); a larger one needs at least a byte of file per
# PIXELS_PER_BYTE pixels. Honest files are far below that (measured on blank 4000 x 4000 images, the best case of
# every codec: PNG 284 pixels a byte in RGB, 2,650 in 1-bit, GIF 1,234, JPEG 170, lossy WebP 561); a header that
# claims 39 megapixels in 69 bytes is refused before anything is allocated. Only lossless WebP of a blank image
# beats it (23,000 pixels a byte), and is refused above 4 MP.
FREE_PIXELS = 4_000_000
PIXELS_PER_BYTE = 4_000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}     # by colour type: grey, RGB, palette, grey + alpha, RGBA
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def open_rgb(image, max_pixels: int | None = None, param: str | None = None):
    """A PIL RGB image from a path, bytes, a PIL image or a uint8 array [h, w, 3], decoded whole and checked.

    BadInput (with `param`, named in the message, and a `code`) when it is not an image or its data is truncated
    or corrupt ("invalid_image": PIL's own checks, and for PNG that the compressed data holds every row: PIL
    quietly leaves the rows of a stream that ends early black), or when it has more pixels than max_pixels
    (default PIL's own limit) or, given max_pixels, than the file's size accounts for (FREE_PIXELS,
    PIXELS_PER_BYTE): "image_too_large", from the header, before anything is decoded."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise BadInput(f"an image array must be uint8 [h, w, 3], not {image.dtype} {image.shape}", param=param)
        return Image.fromarray(image)
    what = f"'{param}'" if param else "the image" if isinstance(image, (bytes, bytearray, memoryview)) else str(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    else:
        try:
            data = Path(image).read_bytes()
        except FileNotFoundError:
            raise _refused(f"{what}: no such file", param) from None
        except OSError as e:
            raise _refused(f"{what}: cannot be read ({e.strerror or e})", param) from None
    if not data:
        raise _refused(f"{what} is empty: no image", param)
    cap = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # our cap is checked below
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if cap is not None and w * h > cap:
                    raise _refused(f"{what} is {w}x{h} = {w * h:,} pixels, more than the {cap:,} allowed (a "
                                   "decompression bomb?)", param, "image_too_large")
                if max_pixels is not None and w * h > max(FREE_PIXELS, PIXELS_PER_BYTE * len(data)):
                    raise _refused(f"{what} declares {w}x{h} = {w * h:,} pixels in only {len(data):,} bytes: above "
                                   f"{FREE_PIXELS:,} pixels an image must bring a byte for every "
                                   f"{PIXELS_PER_BYTE:,} (a decompression bomb, or a truncated file?)", param,
                                   "image_too_large")
                if im.format == "PNG":
                    _check_png_rows(data, what, param)
                im.load()
                return im.convert("RGB")
    except Image.DecompressionBombError:          # beyond twice PIL's limit, refused by Image.open: no size known
        limit = min(cap, 2 * Image.MAX_IMAGE_PIXELS)
        raise _refused(f"{what} declares more than the {limit:,} pixels allowed (a decompression bomb?)", param,
                       "image_too_large") from None
    except UnidentifiedImageError:
        raise _refused(f"{what} is not an image: its bytes are none of the formats read here (PNG, JPEG, WebP, "
                       "GIF, BMP, TIFF ...), or too damaged to tell", param) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:     # PIL's words for truncated and broken data
        raise _refused(f"{what}: truncated or corrupt image data ({_pil_reason(e)})", param) from None


def _refused(message: str, param: str | None, code: str = "invalid_image") -> BadInput:
    e = BadInput(message, param=param)
    e.code = code
    return e


def _pil_reason(e: Exception) -> str:
    """PIL's message, without the repr of the file object some of them quote ("<_io.BytesIO object at 0x...>")."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", str(e)).strip() or type(e).__name__


def _check_png_rows(data: bytes, what: str, param: str | None) -> None:
    """Refuse a PNG whose IDAT data does not inflate to every row its header declares (PIL takes a zlib stream
    that ends early as the whole image). Costs one inflation, counted and thrown away a megabyte at a time:
    deflate expands a byte to at most 1,032, so the work is bounded by the file's size."""
    header, stream, pos = None, [], len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = data[pos + 8:pos + 8 + length]
        elif kind == b"IDAT":
            stream.append(data[pos + 8:pos + 8 + length])
        elif stream:                    # the IDAT chunks are consecutive: the image data is over
            break
        pos += 12 + length
    if header is None or len(header) != 13:
        return                          # PIL's own checks speak for a broken header
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    bits = depth * _PNG_CHANNELS.get(colour, 0)
    need = 0
    for x0, y0, dx, dy in (_ADAM7 if interlace else ((0, 0, 1, 1),)):
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            need += h * (1 + (w * bits + 7) // 8)       # a filter byte, then the row's pixels
    inflate, got = zlib.decompressobj(), 0
    try:
        for part in stream:
            while part and not inflate.eof and got <= need:
                got += len(inflate.decompress(part, 1 << 20))
                part = inflate.unconsumed_tail
        if not inflate.eof and got <= need:
            got += len(inflate.flush())
    except zlib.error as e:
        raise _refused(f"{what}: corrupt image data (its compressed pixels: {e})", param) from None
    if got < need:
        raise _refused(f"{what}: truncated image data: its {width}x{height} pixels take {need:,} bytes and its "
                       f"compressed data holds {got:,}", param)


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

    def resized(self, height: int, width: int, param: str | None = None) -> tuple[int, int]:
        """(h, w) an image of height x width is resized to; BadInput (about `param`, code "invalid_image") for
        an image so thin that a side would shrink to no pixel (1 x 3000 under 800/1333 sizing)."""
        s = self.size
        if not self.do_resize:
            return height, width
        if "shortest_edge" in s:
            h, w = resized_size(height, width, s["shortest_edge"], s.get("longest_edge"))
        elif "max_height" in s:
            scale = min(s["max_height"] / height, s["max_width"] / width)
            h, w = int(height * scale), int(width * scale)
        else:
            return s["height"], s["width"]
        if min(h, w) < 1:
            raise _refused(f"an image of {width}x{height} pixels is too thin for this model: resized to its input "
                           f"size it would be {w}x{h}", param)
        return h, w

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
