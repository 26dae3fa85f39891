"""Object detection: the synthetic digits, COCO and YOLO loaders, box-consistent augmentations, the conditional
two-stage DETR and its losses, a tiny DETR that learns, the Detector task object and the CLI doors."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")
pytest.importorskip("scipy")
Image = pytest.importorskip("PIL.Image")

import puhui  # noqa: E402
from puhui import store  # noqa: E402
from puhui.data.detection import open_detection_dir, read_coco, read_yolo  # noqa: E402
from puhui.data.synthetic_detection import SyntheticSpec, digit_split, synthetic_detection  # noqa: E402
from puhui.errors import BadInput, Unsupported  # noqa: E402
from puhui.models.detr import Detr, DetrConfig  # noqa: E402
from puhui.vision import detr_train as dt  # noqa: E402
from puhui.vision.augment import crop, hflip, random_crop, resize  # noqa: E402
from puhui.vision.coco_eval import coco_map  # noqa: E402
from puhui.vision.detr_loss import dense_loss  # noqa: E402

from conftest import run_cli  # noqa: E402

TINY = SyntheticSpec(n_train=8, n_val=2, n_test=2, image_size=96, min_digit=20, max_digit=36, max_objects=3)
TINY_RECIPE = dt.Recipe(image_size=96, num_queries=8, dim=64, heads=4, ffn_dim=128, encoder_layers=1,
                        decoder_layers=2, stage_dims=(16, 32, 64))


pytestmark = pytest.mark.usefixtures("one_thread")   # small models: threads only cost time


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return synthetic_detection(TINY, root=tmp_path_factory.mktemp("data"))


# ------------------------------------------------------------------------------------------------ synthetic data

def test_synthetic_set_is_deterministic(tiny, tmp_path):
    again = synthetic_detection(TINY, root=tmp_path)
    assert again.name == tiny.name
    for split in ("train", "val", "test"):
        assert (again / split / "annotations.json").read_text() == (tiny / split / "annotations.json").read_text()
        for f in sorted((tiny / split / "images").iterdir()):
            assert np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(again / split / "images" / f.name)))
    assert synthetic_detection(TINY, root=tmp_path) == again          # cached: made once
    other = SyntheticSpec(**{**TINY.__dict__, "seed": 1})
    assert other.name != TINY.name


def test_synthetic_annotations_are_valid_coco(tiny):
    for split, n in (("train", TINY.n_train), ("val", TINY.n_val), ("test", TINY.n_test)):
        d = json.loads((tiny / split / "annotations.json").read_text())
        assert [c["name"] for c in d["categories"]] == [str(i) for i in range(10)]
        assert len(d["images"]) == n and len({im["id"] for im in d["images"]}) == n
        assert len({a["id"] for a in d["annotations"]}) == len(d["annotations"])
        per_image = {}
        for a in d["annotations"]:
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 96 and y + h <= 96
            assert 1 <= a["category_id"] <= 10 and a["area"] == w * h and a["iscrowd"] == 0
            per_image.setdefault(a["image_id"], []).append(a["bbox"])
        for boxes in per_image.values():   # 1..3 digits an image, never overlapping
            assert 1 <= len(boxes) <= TINY.max_objects
            for i, (x, y, w, h) in enumerate(boxes):
                for (u, v, s, t) in boxes[i + 1:]:
                    assert x >= u + s or u >= x + w or y >= v + t or v >= y + h
        for im in d["images"]:
            assert np.asarray(Image.open(tiny / split / "images" / im["file_name"])).shape == (96, 96, 3)
    parts = digit_split(0, 1797)            # train, val and test draw on disjoint handwriting
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(1797))
    assert len(parts["val"]) == len(parts["test"]) == 270


# ------------------------------------------------------------------------------------------------ loaders

def test_coco_layouts(tiny, tmp_path):
    s = open_detection_dir(tiny)
    assert s.layout == "coco" and len(s.train) == 8 and len(s.val) == 2 and len(s.test) == 2
    d = json.loads((tiny / "train" / "annotations.json").read_text())
    first = [a for a in d["annotations"] if a["image_id"] == 1]
    x, y, w, h = first[0]["bbox"]
    assert s.train.boxes[0][0].tolist() == [x, y, x + w, y + h]
    assert s.train.labels[0][0] == first[0]["category_id"] - 1 and s.train.sizes[0] == (96, 96)
    # annotations/instances_<split>.json with images in <split>/
    root = tmp_path / "coco2017"
    (root / "annotations").mkdir(parents=True)
    for split, folder in (("train", "train2017"), ("val", "val2017")):
        (root / "annotations" / f"instances_{folder}.json").write_text((tiny / split / "annotations.json").read_text())
        (root / folder).symlink_to(tiny / split / "images")
    s2 = open_detection_dir(root)
    assert s2.test is None and len(s2.train) == 8 and len(s2.val) == 2
    assert all(np.array_equal(a, b) for a, b in zip(s2.train.boxes, s.train.boxes))
    # one annotations.json + images/: 10% (at least one image) held out for validation
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "annotations.json").write_text((tiny / "train" / "annotations.json").read_text())
    (flat / "images").symlink_to(tiny / "train" / "images")
    s3 = open_detection_dir(flat)
    assert len(s3.train) == 7 and len(s3.val) == 1
    assert {p.name for p in s3.train.images} | {p.name for p in s3.val.images} == {p.name for p in s.train.images}


def test_coco_errors(tiny, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput, match="cannot read"):
        read_coco(bad, tiny / "train" / "images")
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "nope.png", "width": 9, "height": 9}],
                               "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(BadInput, match="missing"):
        read_coco(bad, tmp_path)
    with pytest.raises(BadInput, match="neither a COCO"):
        open_detection_dir(tmp_path)
    with pytest.raises(BadInput, match="not a folder"):
        open_detection_dir(tmp_path / "nothing")


def _as_yolo(tiny: Path, root: Path, names_as: str) -> None:
    """The synthetic COCO set rewritten as a YOLO folder."""
    for split in ("train", "val"):
        d = json.loads((tiny / split / "annotations.json").read_text())
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for im in d["images"]:
            source = tiny / split / "images" / im["file_name"]
            (root / "images" / split / im["file_name"]).write_bytes(source.read_bytes())
            lines = [f"{a['category_id'] - 1} {(a['bbox'][0] + a['bbox'][2] / 2) / 96} "
                     f"{(a['bbox'][1] + a['bbox'][3] / 2) / 96} {a['bbox'][2] / 96} {a['bbox'][3] / 96}"
                     for a in d["annotations"] if a["image_id"] == im["id"]]
            (root / "labels" / split / (Path(im["file_name"]).stem + ".txt")).write_text("\n".join(lines) + "\n")
    names = [str(i) for i in range(10)]
    if names_as == "dict":
        (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n"
                                        + "".join(f"  {i}: '{n}'\n" for i, n in enumerate(names)))
    else:
        (root / "data.yaml").write_text(f"train: images/train\nval: images/val\nnames: {names}\n")


@pytest.mark.parametrize("names_as", ["dict", "list"])
def test_yolo_layout_matches_coco(tiny, tmp_path, names_as):
    _as_yolo(tiny, tmp_path, names_as)
    s, coco = open_detection_dir(tmp_path), open_detection_dir(tiny)
    assert s.layout == "yolo" and s.train.classes == coco.train.classes and len(s.val) == 2
    for got, want, gl, wl in zip(s.train.boxes, coco.train.boxes, s.train.labels, coco.train.labels):
        np.testing.assert_allclose(got, want, atol=1e-3)
        assert gl.tolist() == wl.tolist()


def test_yolo_flat_with_classes_txt_and_errors(tiny, tmp_path):
    _as_yolo(tiny, tmp_path / "src", "list")
    root = tmp_path / "flat"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for f in (tmp_path / "src" / "images" / "train").iterdir():
        (root / "images" / f.name).write_bytes(f.read_bytes())
    for f in (tmp_path / "src" / "labels" / "train").iterdir():
        (root / "labels" / f.name).write_text(f.read_text())
    (root / "labels" / "000000.txt").unlink()                         # an image without objects
    (root / "classes.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    s = open_detection_dir(root)
    assert s.layout == "yolo" and len(s.train) + len(s.val) == 8
    data = read_yolo(root / "images", root / "labels", [str(i) for i in range(10)])
    assert len(data.boxes[0]) == 0
    (root / "labels" / "000001.txt").write_text("3 0.5 0.5\n")
    with pytest.raises(BadInput, match="000001.txt:1"):
        read_yolo(root / "images", root / "labels", [str(i) for i in range(10)])
    (root / "labels" / "000001.txt").write_text("12 0.5 0.5 0.1 0.1\n")
    with pytest.raises(BadInput, match="class 12"):
        read_yolo(root / "images", root / "labels", [str(i) for i in range(10)])
    (root / "classes.txt").unlink()
    with pytest.raises(BadInput, match="no class names"):
        open_detection_dir(root)


# ------------------------------------------------------------------------------------------------ augmentations

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def _painted(boxes) -> Image.Image:
    """A black 120 x 80 image with each (integer) box filled in its own colour."""
    a = np.zeros((80, 120, 3), np.uint8)
    for (x0, y0, x1, y1), c in zip(boxes, COLOURS):
        a[y0:y1, x0:x1] = c
    return Image.fromarray(a)


def _found(image: Image.Image, colour) -> list[float] | None:
    """The box (x0, y0, x1, y1) of the pixels closest to colour, or None when there are none."""
    a = np.asarray(image, np.int32)
    ys, xs = np.nonzero(np.abs(a - np.array(colour)).sum(-1) < 200)
    return None if len(xs) == 0 else [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


BOXES = np.array([[5, 10, 30, 40], [50, 5, 90, 25], [70, 40, 118, 78], [2, 60, 12, 70]], np.float32)


def test_hflip_moves_boxes_with_pixels():
    image, boxes = hflip(_painted(BOXES.astype(int)), BOXES)
    for b, c in zip(boxes, COLOURS):
        assert _found(image, c) == b.tolist()
    twice = hflip(image, boxes)[1]
    assert np.array_equal(twice, BOXES)


@pytest.mark.parametrize("size", [(40, 60), (160, 240), (100, 100)])
def test_resize_scales_boxes_with_pixels(size):
    image, boxes = resize(_painted(BOXES.astype(int)), BOXES, size)
    assert image.size == (size[1], size[0])
    for b, c in zip(boxes, COLOURS):
        assert np.abs(np.array(_found(image, c)) - b).max() <= 1.0   # bilinear: within a pixel


def test_crop_clips_shifts_and_drops_boxes():
    image = _painted(BOXES.astype(int))
    out, boxes, labels = crop(image, BOXES, np.arange(4), (20, 0, 100, 50))
    # box 0 keeps 10 of 25 columns (40% < 50%): dropped; box 1 inside; box 2 keeps 30/48 x 10/38: dropped; 3 out
    assert labels.tolist() == [1] and out.size == (80, 50)
    assert boxes.tolist() == [[30, 5, 70, 25]] and _found(out, COLOURS[1]) == boxes[0].tolist()
    out, boxes, labels = crop(image, BOXES, np.arange(4), (0, 0, 100, 80), min_visible=0.5)
    assert labels.tolist() == [0, 1, 2, 3]
    assert boxes[2].tolist() == [70, 40, 100, 78]                        # clipped at the window's edge
    for b, c in zip(boxes, COLOURS):
        assert _found(out, c) == b.tolist()
    with pytest.raises(BadInput):
        crop(image, BOXES, np.arange(4), (0, 0, 200, 80))


def test_random_crop_keeps_boxes_on_their_pixels():
    rng = np.random.default_rng(0)
    image = _painted(BOXES.astype(int))
    for _ in range(30):
        out, boxes, labels = random_crop(image, BOXES, np.arange(4), rng, min_scale=0.5, min_visible=0.3)
        assert out.width >= 60 and out.height >= 40
        for b, k in zip(boxes, labels):
            assert _found(out, COLOURS[k]) == b.tolist()
            assert 0 <= b[0] < b[2] <= out.width and 0 <= b[1] < b[3] <= out.height


def test_dataset_targets_follow_augmentation(tiny):
    data = open_detection_dir(tiny).train
    ds = dt.DetectionDataset(data, 64, augment=True, flip=True)
    torch.manual_seed(0)
    for i in range(len(data)):
        pixels, t = ds[i]
        assert pixels.shape == (3, 64, 64) and t["boxes"].shape == (len(t["class_labels"]), 4)
        assert ((t["boxes"] >= 0) & (t["boxes"] <= 1)).all() and (t["boxes"][:, 2:] > 0).all()
    plain = dt.DetectionDataset(data, 96)[0][1]                      # no augmentation: the boxes / 96
    want = torch.from_numpy(data.boxes[0]) / 96
    np.testing.assert_allclose(plain["boxes"][:, :2] - plain["boxes"][:, 2:] / 2, want[:, :2], atol=1e-6)


# ------------------------------------------------------------------------------------------------ model and loss

def _tiny_model(**kw) -> Detr:
    torch.manual_seed(0)
    return Detr(DetrConfig(**{**dt.detr_config(TINY_RECIPE, [str(i) for i in range(10)]).__dict__, **kw}))


def test_conditional_two_stage_outputs():
    m = _tiny_model().eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        logits, boxes = m(x)
        aux_logits, aux_boxes, cells = m(x, aux=True, dense=True)
    assert logits.shape == (2, 8, 11) and boxes.shape == (2, 8, 4)
    assert aux_logits.shape == (3, 2, 8, 11)            # the selected proposals, then each decoder layer
    assert torch.allclose(aux_logits[-1], logits, atol=1e-5) and torch.allclose(aux_boxes[-1], boxes, atol=1e-5)
    assert cells["logits"].shape == (2, 36, 11) and cells["centres"].shape == (36, 2) and cells["mask"].all()
    assert ((boxes > 0) & (boxes < 1)).all()
    plain = _tiny_model(two_stage=False).eval()
    with torch.no_grad():
        assert plain(x)[0].shape == (2, 8, 11)
        with pytest.raises(Unsupported):
            plain(x, dense=True)
    with pytest.raises(BadInput, match="fewer than"):
        m(torch.randn(1, 3, 32, 32))                    # 2 x 2 cells for 8 queries
    with pytest.raises(Unsupported):
        DetrConfig(variant="deformable")
    with pytest.raises(Unsupported):
        DetrConfig(two_stage=True)


def test_dense_loss_assigns_cells_inside_boxes():
    config = DetrConfig(num_classes=3)
    centres = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    target = [{"class_labels": torch.tensor([2]), "boxes": torch.tensor([[0.3, 0.3, 0.4, 0.4]])}]
    boxes = torch.tensor([[[0.3, 0.3, 0.4, 0.4]] * 4])
    right = torch.full((1, 4, 4), -10.0)
    right[0, 0, 2] = 10                                  # the cell inside the box says class 2
    right[0, 1:, 3] = 10                                 # the others say no object
    wrong = right.clone()
    wrong[0, 0] = right[0, 1]
    mask = torch.ones(1, 4, dtype=torch.bool)
    good = dense_loss(right, boxes, centres, mask, target, config)
    assert good.item() < 1e-3
    assert dense_loss(wrong, boxes, centres, mask, target, config).item() > 5
    tiny_box = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.7, 0.8, 0.02, 0.02]])}]
    logits = torch.zeros(1, 4, 4, requires_grad=True)    # a box holding no centre still gets the nearest cell
    dense_loss(logits, boxes, centres, mask, tiny_box, config).backward()
    assert logits.grad[0, 3, 1] < 0 and logits.grad[0, 0, 1] > 0


def test_coco_map_uses_pycocotools():
    gt_boxes = [np.array([[10, 10, 50, 50], [60, 60, 90, 90]], np.float32)]
    labels = [np.array([0, 1])]
    perfect = coco_map([(100, 100)], gt_boxes, labels, gt_boxes, [np.array([0.9, 0.8])], labels, n_classes=2)
    assert perfect == {"map": pytest.approx(1.0), "map50": pytest.approx(1.0)}
    shifted = [gt_boxes[0] + np.array([8, 0, 8, 0], np.float32)]           # IoU 0.67 each: .5 yes, .75 no
    half = coco_map([(100, 100)], gt_boxes, labels, shifted, [np.array([0.9, 0.8])], labels, n_classes=2)
    assert half["map50"] == pytest.approx(1.0) and half["map"] == pytest.approx(0.3)   # (4 + 2) / 20 thresholds
    wrong = coco_map([(100, 100)], gt_boxes, labels, gt_boxes, [np.array([0.9, 0.8])], [np.array([1, 0])], 2)
    assert wrong["map50"] == 0.0
    assert coco_map([(100, 100)], gt_boxes, labels, [np.zeros((0, 4))], [np.zeros(0)], [np.zeros(0)], 2)["map"] == 0


def test_tiny_detr_learns_a_handful_of_images(tiny):
    """8 synthetic images, 24 epochs of 64: mAP@.5 (pycocotools) on them goes from ~0 to well above chance."""
    from puhui.train import TrainConfig, fit

    data = open_detection_dir(tiny).train
    model = _tiny_model()
    before = dt.evaluate_on(model, data, 96)["map50"]
    ds = dt.DetectionDataset(data, 96)

    class Repeat(torch.utils.data.Dataset):
        def __len__(self):
            return 8 * len(data)

        def __getitem__(self, i):
            return ds[i % len(data)]

    t0 = time.perf_counter()
    fit(model, dt.loss_fn, Repeat(), TrainConfig(epochs=24, batch_size=8, lr=2e-3, optimizer="adamw",
                                                 warmup_steps=10, clip_grad_norm=1.0), collate_fn=dt.collate)
    after = dt.evaluate_on(model, data, 96)
    assert time.perf_counter() - t0 < 60
    assert before < 0.1 and after["map50"] >= 0.6, (before, after)


# ------------------------------------------------------------------------------------------------ task and CLI

def _save_tiny(name: str):
    from safetensors.torch import save

    model = _tiny_model().eval()
    config = {**model.config.__dict__, "image_size": 96}
    store.save_model(name, "detection", "detr", "safetensors",
                     {"model.safetensors": save({k: v.contiguous() for k, v in model.state_dict().items()}),
                      "config.json": json.dumps(config).encode()}, main="model.safetensors")
    return model


@pytest.fixture
def detector_model(home):
    """A tiny random (untrained) detector saved in the store as 'tiny-detr'."""
    return _save_tiny("tiny-detr")


def test_server_serves_the_default_detector_once_trained(home):
    from puhui.tasks.defaults import default_models

    assert "detr-synthetic" not in default_models()
    _save_tiny("detr-synthetic")
    assert "detr-synthetic" in default_models()


def test_detector_output_and_drawing(detector_model, tiny, tmp_path):
    det = puhui.load("tiny-detr")
    image = tiny / "test" / "images" / "000000.png"
    found = det.detect(image, threshold=0.0)
    assert len(found) == 8                                    # every query scores above 0
    assert [o["score"] for o in found] == sorted((o["score"] for o in found), reverse=True)
    for o in found:
        assert set(o) == {"label", "score", "box"} and o["label"] in [str(i) for i in range(10)]
        x0, y0, x1, y1 = o["box"]
        assert 0 <= x0 <= x1 <= 96 and 0 <= y0 <= y1 <= 96 and 0 <= o["score"] <= 1
    as_array = det.detect(np.asarray(Image.open(image).convert("RGB")), threshold=0.0)
    assert as_array == found
    assert det.detect(image, threshold=1.0) == []
    out = det.draw(image, found[:3], tmp_path / "boxes.png")
    drawn = Image.open(out)
    assert drawn.size == (96, 96) and drawn.format == "PNG"
    assert not np.array_equal(np.asarray(drawn.convert("RGB")), np.asarray(Image.open(image).convert("RGB")))
    with pytest.raises(BadInput, match="threshold"):
        det.detect(image, threshold=1.5)
    with pytest.raises(BadInput, match="not an image"):
        det.detect(tiny / "train" / "annotations.json")
    cut = tmp_path / "cut.png"
    cut.write_bytes(image.read_bytes()[:-40])
    with pytest.raises(BadInput, match="truncated") as e:
        det.open_image(cut, max_pixels=40_000_000, param="file")
    assert (e.value.param, e.value.code) == ("file", "invalid_image")
    with pytest.raises(BadInput, match="truncated"):
        det.detect(cut)


def test_cli_detect_lines_json_and_errors(detector_model, home, tiny, tmp_path):
    image = str(tiny / "test" / "images" / "000001.png")
    r = run_cli("detect", "tiny-detr", image, "--threshold", "0", "--out", str(tmp_path / "b.png"), home=home)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "Detected 8 objects:" and len(lines) == 9
    pattern = re.compile(r"Object \d+: Class [0-9], Confidence \d\.\d\d, Box \[[\d.]+, [\d.]+, [\d.]+, [\d.]+\]")
    assert all(pattern.fullmatch(line) for line in lines[1:]) and lines[1].startswith("Object 1: ")
    assert Image.open(tmp_path / "b.png").size == (96, 96)
    r = run_cli("detect", "tiny-detr", image, "--threshold", "0", "--json", home=home)
    obj = json.loads(r.stdout)
    assert obj["model"] == "tiny-detr" and len(obj["objects"]) == 8
    for args, message in ((("tiny-detr", str(tmp_path / "missing.png")), "no such file"),
                          (("tiny-detr", str(tiny / "train" / "annotations.json")), "not an image"),
                          (("no-such-model", image), "no-such-model")):
        r = run_cli("detect", *args, home=home)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_http_detections_multipart_json_and_errors(detector_model, tiny, tmp_path):
    import base64
    import io

    from fastapi.testclient import TestClient

    from puhui.serve import create_app

    png = (tiny / "test" / "images" / "000000.png").read_bytes()
    expected = puhui.load("tiny-detr").detect(tiny / "test" / "images" / "000000.png", threshold=0.0)
    app = create_app(["tiny-detr"], aliases={}, max_body=1 << 16, max_image_body=1 << 20)
    with TestClient(app) as client:
        r = client.post("/v1/detections", files={"file": ("digits.png", png)},
                        data={"model": "tiny-detr", "threshold": "0"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["object"] == "detection" and out["model"] == "tiny-detr" and (out["width"], out["height"]) == (96, 96)
        assert out["objects"] == expected and len(expected) == 8
        b64 = base64.b64encode(png).decode()
        for image in (b64, "data:image/png;base64," + b64):
            r = client.post("/v1/detections", json={"model": "tiny-detr", "image": image, "threshold": 0})
            assert r.status_code == 200 and r.json()["objects"] == expected, r.text
        r = client.post("/v1/detections", json={"model": "tiny-detr", "image": b64, "threshold": 1})
        assert r.json()["objects"] == [] and r.json()["threshold"] == 1

        def error(status, **kwargs):
            r = client.post("/v1/detections", **kwargs)
            assert r.status_code == status, r.text
            return r.json()["error"]

        def bomb() -> bytes:
            buf = io.BytesIO()
            Image.new("1", (8000, 8000)).save(buf, format="PNG")     # 64 megapixels in a few kB
            assert len(buf.getvalue()) < 1 << 16
            return buf.getvalue()

        text = b"these are words, not an image\n" * 10
        assert error(400, files={"file": ("notes.txt", text)}, data={"model": "tiny-detr"})["param"] == "file"
        err = error(400, json={"model": "tiny-detr", "image": base64.b64encode(text).decode()})
        assert err["param"] == "image" and "not an image" in err["message"]
        assert err["code"] == "invalid_image" and err["message"].startswith("'image' is not an image") and \
            "BytesIO" not in err["message"]                               # no memory address
        assert error(400, json={"model": "tiny-detr", "image": "%%% not base64"})["param"] == "image"
        err = error(400, files={"file": ("bomb.png", bomb())}, data={"model": "tiny-detr"})
        assert err["param"] == "file" and "decompression bomb" in err["message"], err
        assert err["code"] == "image_too_large" and "8000x8000 = 64,000,000 pixels, more than the 40,000,000" in \
            err["message"]
        cut = png[:len(png) - 30]
        err = error(400, files={"file": ("cut.png", cut)}, data={"model": "tiny-detr"})
        assert (err["param"], err["code"]) == ("file", "invalid_image") and "truncated" in err["message"], err
        err = error(400, json={"model": "tiny-detr", "image": base64.b64encode(bomb()).decode()})
        assert "decompression bomb" in err["message"], err
        assert error(413, files={"file": ("big.png", bytes(2 << 20))}, data={"model": "tiny-detr"})["code"] == \
            "request_too_large"
        assert error(404, json={"model": "detr-coco", "image": b64})["param"] == "model"
        assert error(400, json={"model": "tiny-detr", "image": b64, "threshold": 2})["param"] == "threshold"
        assert error(400, json={"model": "tiny-detr", "image": b64, "colour": "red"})["param"] == "colour"
        assert error(400, json={"model": "tiny-detr"})["param"] == "image"
        assert error(400, files={"file": ("a.png", png)}, data={"model": "tiny-detr", "nms": "1"})["param"] == "nms"
        assert error(400, files={"model": (None, "tiny-detr"), "file": (None, "a field, not a file")})["param"] == \
            "file"
        assert error(400, files={"file": ("empty.png", b"")}, data={"model": "tiny-detr"})["param"] == "file"
        assert error(400, content=b"{not json", headers={"Content-Type": "application/json"})["code"] == "invalid_json"
        assert error(415, content=png, headers={"Content-Type": "image/png"})["code"] == "unsupported_media_type"
        assert client.get("/v1/models").json()["data"][0]["task"] == "detection"


def test_inference_does_not_import_the_training_code(detector_model, home, tiny):
    """The Detector and the server's route use puhui.vision.detr_processing, never puhui.vision.detr_train."""
    import subprocess
    import sys

    image = tiny / "test" / "images" / "000000.png"
    code = ("import sys, puhui; from puhui.serve import vision; d = puhui.load('tiny-detr'); "
            f"d.detect(d.open_image({str(image)!r}, max_pixels=vision.MAX_PIXELS), 0.5); "
            "print(sorted(m for m in sys.modules if m.startswith('puhui.vision.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PUHUI_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    loaded = eval(r.stdout.strip().splitlines()[-1])
    assert "puhui.vision.detr_processing" in loaded and "puhui.vision.detr_train" not in loaded, loaded


def test_old_run_without_preprocessor_config_uses_its_image_size(detector_model, tiny):
    """A puhui run saved before runs wrote preprocessor_config.json: its config.json's square image_size."""
    det = puhui.load("tiny-detr")
    assert det.processor.size == {"height": 96, "width": 96}
    pixels, _ = det.processor.preprocess([tiny / "test" / "images" / "000000.png"])
    assert pixels.shape == (1, 3, 96, 96)


# ------------------------------------------------------------------------------------------------ Hugging Face DETR

HF_LABELS = {0: "cat", 1: "dog", 2: "bird"}


def _hf_detr(folder: Path, size: dict | None = None):
    """A tiny random transformers DetrForObjectDetection (transformers' ResNet backbone, labels cat/dog/bird) saved
    with save_pretrained to folder, with a preprocessor_config.json of `size` when given; (model, processor)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False,
        backbone_config=transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1],
                                                  layer_type="basic", out_features=["stage4"]),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=6, id2label=HF_LABELS,
        label2id={v: k for k, v in HF_LABELS.items()}, init_std=0.2)
    model = transformers.DetrForObjectDetection(config).eval()
    with torch.no_grad():   # batch-norm statistics away from 0 and 1; queries that disagree on the class
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
        model.model.query_position_embeddings.weight.normal_(0, 3)
        model.class_labels_classifier.weight.normal_(0, 1)
    model.save_pretrained(folder)
    cls = getattr(transformers, "DetrImageProcessorPil", transformers.DetrImageProcessor)
    processor = cls() if size is None else cls(size=size)
    if size is not None:
        processor.save_pretrained(folder)
    return model, processor


def _photo(path: Path, h: int = 70, w: int = 110) -> Path:
    """A smooth colour picture (gradients and a few discs), h x w, as PNG."""
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], -1).astype(np.uint8)
    for cy, cx, r, c in ((20, 30, 12, (250, 40, 40)), (45, 80, 18, (30, 200, 60)), (60, 20, 8, (20, 20, 240))):
        a[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c
    Image.fromarray(a).save(path)
    return path


@pytest.mark.parametrize("size", [None, {"shortest_edge": 200, "longest_edge": 400}], ids=["defaults", "own-size"])
def test_cli_detects_with_an_imported_transformers_detr(home, tmp_path, size):
    """`puhui models import` of a transformers DETR folder (config.json + model.safetensors; with or without a
    preprocessor_config.json), then `puhui detect --json`: the objects transformers finds with the same
    checkpoint and processor (DetrImageProcessor, post_process_object_detection), boxes clipped to the image,
    labels named by config.id2label."""
    folder = tmp_path / "hf-detr"
    model, processor = _hf_detr(folder, size)
    assert (folder / "preprocessor_config.json").is_file() == (size is not None)
    image = _photo(tmp_path / "photo.png")
    r = run_cli("models", "import", str(folder), "--name", "hf-detr", home=home)
    assert r.returncode == 0, r.stderr
    r = run_cli("detect", "hf-detr", str(image), "--json", "--threshold", "0", home=home)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    got = json.loads(r.stdout)["objects"]

    im = Image.open(image).convert("RGB")
    inputs = processor(images=im, return_tensors="pt")
    want_h = {None: 800, 200: 200}[size and size["shortest_edge"]]
    assert inputs["pixel_values"].shape[-2] == want_h          # the processor really differs between the two
    with torch.no_grad():
        out = model(**inputs)
    want = processor.post_process_object_detection(out, threshold=0, target_sizes=[(im.height, im.width)])[0]
    order = want["scores"].argsort(descending=True)
    scale = torch.tensor([im.width, im.height] * 2, dtype=torch.float32)
    want_boxes = torch.minimum(want["boxes"][order].clamp(min=0), scale)

    assert len(got) == 6                                        # every query scores above 0
    assert [o["label"] for o in got] == [HF_LABELS[int(i)] for i in want["labels"][order]]
    assert len({o["label"] for o in got}) >= 2
    assert np.abs(np.array([o["score"] for o in got]) - want["scores"][order].numpy()).max() <= 1e-4
    assert ((torch.tensor([o["box"] for o in got]) - want_boxes) / scale).abs().max() <= 1e-4


def test_cli_model_problems_are_one_line_errors(home, tmp_path):
    """A broken detection model in the store is an error line and an exit code, never a traceback."""
    from safetensors.torch import load_file, save_file

    good = tmp_path / "good"
    _hf_detr(good)
    image = _photo(tmp_path / "photo.png")

    def variant(name: str, config=None, tensors=None, preprocessor=None) -> str:
        folder = tmp_path / name
        folder.mkdir()
        c = json.loads((good / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config(c) if config else c))
        t = load_file(good / "model.safetensors")
        save_file(tensors(t) if tensors else t, folder / "model.safetensors")
        if preprocessor is not None:
            (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
        store.import_path(folder, name)
        r = run_cli("detect", name, str(image), home=home)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
        return r.stderr

    assert "swin" in variant("swin", config=lambda c: {**c, "backbone_config": {"model_type": "swin"}})
    assert "timm" in variant("timm", config=lambda c: {k: v for k, v in c.items() if k != "backbone_config"}
                             | {"use_timm_backbone": True})
    assert "input_proj.bias" in variant("missing", tensors=lambda t: {k: v for k, v in t.items()
                                                                        if k != "model.input_projection.bias"})
    assert "preprocessor_config.json" in variant("bad-size", preprocessor={"size": {"width": 64}})
    assert "preprocessor_config.json" in variant("bad-mean", preprocessor={"image_mean": "grey"})
    assert "config.json" in variant("bad-layers", config=lambda c: {**c, "encoder_layers": "two"})


def test_cli_detect_refuses_a_model_of_another_task(home, tiny):
    from safetensors.torch import save

    store.save_model("a-classifier", "classification", "mlp", "safetensors",
                     {"model.safetensors": save({"w": torch.zeros(1)})}, main="model.safetensors")
    r = run_cli("detect", "a-classifier", str(tiny / "test" / "images" / "000000.png"), home=home)
    assert r.returncode == 2 and "classification" in r.stderr and "detection" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.slow
def test_cli_train_detr_synthetic_then_detect(home, tmp_path):
    """End to end on a small budget: 96 training images, 3 epochs, then `detect` with the stored model."""
    t0 = time.perf_counter()
    r = run_cli("train", "detr", "--data", "synthetic", "--epochs", "3", "--train-images", "96", "--json",
                home=home, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["model"] == "detr-synthetic" and res["eval_split"] == "test" and res["eval_images"] == 20
    assert 0 <= res["map50"] <= 1 and 0 <= res["map"] <= res["map50"] and res["epochs_run"] == 3
    assert res["backbone_pretrain"]["crops"] > 96 and (Path(res["run_dir"]) / "backbone" / "checkpoint.pt").is_file()
    for line in ("data: synthetic digits", "backbone Epoch 1: Loss = ", "backbone pre-trained on ", "Epoch 3: Loss = "):
        assert re.search("^" + re.escape(line), r.stderr, re.M), (line, r.stderr[-2000:])   # messages: stderr
    m = store.get("detr-synthetic")
    assert m.task == "detection" and {f.name for f in m.files} >= {"model.safetensors", "config.json",
                                                                   "preprocessor_config.json", "loss_curve.png",
                                                                   "metrics.json"}
    assert puhui.load("detr-synthetic").processor.size == {"height": 128, "width": 128}
    assert (Path(res["run_dir"]) / "checkpoint.pt").is_file()
    image = next((home / "data").glob("synthetic-digits-*/test/images/000000.png"))
    r = run_cli("detect", "detr-synthetic", str(image), "--threshold", "0.01", "--out", str(tmp_path / "o.png"),
                home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Detected ") and (tmp_path / "o.png").is_file()
    assert time.perf_counter() - t0 < 300
