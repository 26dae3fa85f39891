"""Parity of puhui's DETR (model, processing, loss) with transformers, on tiny random checkpoints saved locally."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("scipy")
Image = pytest.importorskip("PIL.Image")

from safetensors.torch import load_file, save_file  # noqa: E402

from puhui.errors import BadCheckpoint, Unsupported  # noqa: E402
from puhui.models.checkpoint import read_config  # noqa: E402
from puhui.models.detr import ConvNorm, Detr, DetrConfig, load_detr, prepare_for_inference  # noqa: E402
from puhui.vision.detr_loss import detr_loss  # noqa: E402
from puhui.vision.detr_processing import DetrPreprocessor, post_process  # noqa: E402

BACKBONES = {  # tiny ResNets: bottleneck (resnet-50 style) and basic blocks (resnet-18/34 style)
    "bottleneck": dict(embedding_size=8, hidden_sizes=[16, 16, 32, 32], depths=[2, 1, 1, 1], layer_type="bottleneck",
                       out_features=["stage4"]),
    "basic": dict(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 2, 1, 1], layer_type="basic",
                  downsample_in_first_stage=True, out_features=["stage2", "stage3"]),  # stage4 unused
}
SIZES = [(64, 96), (80, 56)]  # two images of different sizes, padded to 80 x 96


pytestmark = pytest.mark.usefixtures("one_thread")   # small models: threads only cost time


def hf_detr(backbone: str, **kw):
    torch.manual_seed(0)
    config = transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False,
        backbone_config=transformers.ResNetConfig(**BACKBONES[backbone]), d_model=32, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, num_queries=6, num_labels=3, init_std=0.2, **kw)
    model = transformers.DetrForObjectDetection(config).eval()
    with torch.no_grad():  # random batch-norm statistics, so the frozen batch norm is really exercised
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "bias")):
                buf.normal_(0, 0.1)
            elif name.endswith(("running_var", "weight")):
                buf.uniform_(0.5, 1.5)
    model.config._attn_implementation = "eager"
    return model


@pytest.fixture(scope="module", params=list(BACKBONES))
def pair(request, tmp_path_factory):
    """(transformers model, our model, checkpoint folder) for one backbone."""
    path = tmp_path_factory.mktemp(request.param)
    hf = hf_detr(request.param)
    hf.save_pretrained(path)
    ours, _ = load_detr(path)
    return hf, ours, path


def batch():
    g = torch.Generator().manual_seed(1)
    pixels = torch.zeros(2, 3, 80, 96)
    mask = torch.zeros(2, 80, 96, dtype=torch.int64)
    for i, (h, w) in enumerate(SIZES):
        pixels[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
        mask[i, :h, :w] = 1
    return pixels, mask


def labels():
    g = torch.Generator().manual_seed(2)
    out = []
    for n in (3, 1):
        centre, size = 0.3 + 0.4 * torch.rand(n, 2, generator=g), 0.1 + 0.3 * torch.rand(n, 2, generator=g)
        out.append({"class_labels": torch.randint(0, 3, (n,), generator=g), "boxes": torch.cat([centre, size], 1)})
    return out


def test_outputs_match_transformers(pair):
    hf, ours, _ = pair
    pixels, mask = batch()
    with torch.no_grad():
        want = hf(pixel_values=pixels, pixel_mask=mask)
        logits, boxes = ours(pixels, mask)
    assert logits.shape == (2, 6, 4) and boxes.shape == (2, 6, 4)
    assert (logits - want.logits).abs().max() <= 1e-4
    assert (boxes - want.pred_boxes).abs().max() <= 1e-4


def test_prepared_for_inference_matches_transformers(pair):
    """Folded batch norms, channels-last backbone, in-place activations: the same outputs, float32."""
    hf, _, path = pair
    fast = prepare_for_inference(load_detr(path)[0])
    assert all(isinstance(m.norm, torch.nn.Identity) for m in fast.backbone.modules() if isinstance(m, ConvNorm))
    pixels, mask = batch()
    with torch.inference_mode():
        want = hf(pixel_values=pixels, pixel_mask=mask)
        logits, boxes = fast(pixels, mask)
    assert (logits - want.logits).abs().max() <= 1e-4
    assert (boxes - want.pred_boxes).abs().max() <= 1e-4


def test_folding_a_trained_batch_norm():
    torch.manual_seed(0)
    config = DetrConfig(num_classes=2, num_queries=4, dim=16, encoder_layers=1, decoder_layers=1, encoder_heads=2,
                        decoder_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, stem_dim=8, stage_dims=(8, 16),
                        depths=(1, 1), bottleneck=False, feature_stage=2, backbone_norm="batch")
    model = Detr(config)
    pixels = torch.randn(2, 3, 64, 64)
    model.train()
    for _ in range(3):                    # running statistics away from 0 and 1
        model(pixels)
    model.eval()
    with torch.no_grad():
        want = model(pixels)
    with pytest.raises(Unsupported, match="eval mode"):
        model.backbone.stem.train()
        model.backbone.stem.fold()
    with torch.no_grad():
        got = prepare_for_inference(model)(pixels)
    assert isinstance(model.backbone.stem.norm, torch.nn.Identity)
    assert (got[0] - want[0]).abs().max() <= 1e-4 and (got[1] - want[1]).abs().max() <= 1e-4


def test_auxiliary_outputs(pair):
    """aux=True stacks one output per decoder layer; the last is the plain output, the first equals transformers'
    auxiliary output (its later ones differ: with auxiliary_loss transformers re-normalises the decoder stream
    between layers, which the original DETR does not)."""
    hf, ours, _ = pair
    pixels, mask = batch()
    with torch.no_grad():
        logits, boxes = ours(pixels, mask, aux=True)
        final = ours(pixels, mask)
        hf.config.auxiliary_loss = True
        try:
            want = hf(pixel_values=pixels, pixel_mask=mask, labels=labels()).auxiliary_outputs
        finally:
            hf.config.auxiliary_loss = False
    assert logits.shape == (2, 2, 6, 4) and boxes.shape == (2, 2, 6, 4)
    # the heads run on all layers at once here, so the last bits may differ with the matmul's blocking
    assert (logits[-1] - final[0]).abs().max() <= 1e-5 and (boxes[-1] - final[1]).abs().max() <= 1e-5
    assert (logits[0] - want[0]["logits"]).abs().max() <= 1e-4
    assert (boxes[0] - want[0]["pred_boxes"]).abs().max() <= 1e-4


def test_loss_matches_transformers(pair):
    hf, ours, _ = pair
    pixels, mask = batch()
    with torch.no_grad():
        want = hf(pixel_values=pixels, pixel_mask=mask, labels=labels())
        logits, boxes = ours(pixels, mask)
    config = DetrConfig.from_hf(hf.config.to_dict())
    loss, parts = detr_loss(logits, boxes, labels(), config)
    assert abs(loss.item() - want.loss.item()) <= 1e-4 * abs(want.loss.item())
    for k in ("loss_ce", "loss_bbox", "loss_giou"):
        assert abs(parts[k].item() - want.loss_dict[k].item()) <= 1e-4 * abs(want.loss_dict[k].item()), k


def test_auxiliary_loss_matches_transformers(pair):
    """transformers' own loss function fed our per-layer outputs, auxiliary_loss on (see test_auxiliary_outputs)."""
    from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

    hf, ours, _ = pair
    pixels, mask = batch()
    with torch.no_grad():
        logits, boxes = ours(pixels, mask, aux=True)
    hf.config.auxiliary_loss = True
    try:
        want, want_parts, _ = ForObjectDetectionLoss(logits[-1], labels(), "cpu", boxes[-1], hf.config, logits, boxes)
    finally:
        hf.config.auxiliary_loss = False
    loss, parts = detr_loss(logits, boxes, labels(), DetrConfig.from_hf(hf.config.to_dict()))
    assert abs(loss.item() - want.item()) <= 1e-4 * abs(want.item())
    assert set(parts) == {k for k in want_parts if k.startswith("loss_")}


def test_loss_without_targets_and_gradients(pair):
    _, ours, _ = pair
    pixels, mask = batch()
    ours.train()
    try:
        logits, boxes = ours(pixels, mask, aux=True)
        empty = [{"class_labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
        loss, _ = detr_loss(logits, boxes, empty, DetrConfig(num_classes=3))
        loss.backward()
        assert torch.isfinite(loss)
        assert ours.class_head.weight.grad is not None
        assert ours.backbone.stages[1][0].convs[0].conv.weight.grad is not None
        assert ours.backbone.stem.conv.weight.grad is None  # DETR keeps the stem and first stage frozen
    finally:
        ours.eval().zero_grad(set_to_none=True)


def test_post_process_matches_transformers(pair):
    hf, _, _ = pair
    pixels, mask = batch()
    with torch.no_grad():
        out = hf(pixel_values=pixels, pixel_mask=mask)
    processor = getattr(transformers, "DetrImageProcessorPil", transformers.DetrImageProcessor)()
    threshold = out.logits.softmax(-1)[..., :-1].max(-1).values.median().item()  # keeps some, drops some
    for sizes in (SIZES, torch.tensor(SIZES)):
        want = processor.post_process_object_detection(out, threshold=threshold, target_sizes=sizes)
        got = post_process(out.logits, out.pred_boxes, sizes, threshold)
        for g, w in zip(got, want):
            assert torch.equal(g["labels"], w["labels"]) and torch.equal(g["scores"], w["scores"])
            assert torch.allclose(g["boxes"], w["boxes"], rtol=0, atol=1e-5)
    assert sum(len(r["scores"]) for r in got) > 0


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(30, 45), (20, 100)]]


def _processor_cls():
    return getattr(transformers, "DetrImageProcessorPil", transformers.DetrImageProcessor)


@pytest.mark.parametrize("size", [None, {"shortest_edge": 64, "longest_edge": 100}])
def test_preprocess_matches_transformers(size):
    images = _images()
    cls = _processor_cls()
    processor = cls() if size is None else cls(size=size)
    want = processor(images=images, return_tensors="pt")
    ours = DetrPreprocessor() if size is None else DetrPreprocessor(size=size)
    pixels, mask = ours.preprocess(images)
    assert pixels.shape == want["pixel_values"].shape
    assert (pixels - want["pixel_values"]).abs().max() <= 1e-6
    assert torch.equal(mask, want["pixel_mask"])
    again, _ = ours.preprocess([np.asarray(im) for im in images])  # uint8 arrays work the same
    assert torch.equal(again, pixels)


PREPROCESSOR_CONFIGS = {   # preprocessor_config.json settings, as transformers writes and reads them
    "defaults": {},
    "shortest 40, longest 70": {"size": {"shortest_edge": 40, "longest_edge": 70}},
    "legacy size and max_size": {"size": 50, "max_size": 90},
    "height and width": {"size": {"height": 48, "width": 64}},
    "max height and width": {"size": {"max_height": 60, "max_width": 50}},
    "own mean, std and rescale": {"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.3, 0.25],
                                  "rescale_factor": 0.005},
    "no normalisation": {"do_normalize": False},
    "no rescaling": {"do_rescale": False},
    "no resizing, bicubic": {"do_resize": False, "resample": 3},
    "fixed pad size": {"pad_size": {"height": 1400, "width": 1400}},
}


@pytest.mark.parametrize("settings", list(PREPROCESSOR_CONFIGS))
def test_preprocessor_config_read_as_transformers_reads_it(settings, tmp_path):
    """A preprocessor_config.json saved by transformers' DetrImageProcessor: DetrPreprocessor.from_hf of it makes
    the pixels and mask that transformers' processor loaded from it makes."""
    _processor_cls()(**PREPROCESSOR_CONFIGS[settings]).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    want = _processor_cls().from_pretrained(tmp_path)(images=_images(), return_tensors="pt")
    pixels, mask = DetrPreprocessor.from_hf(saved).preprocess(_images())
    assert pixels.shape == want["pixel_values"].shape
    assert (pixels - want["pixel_values"]).abs().max() <= 1e-6 * max(1.0, float(want["pixel_values"].abs().max()))
    assert torch.equal(mask, want["pixel_mask"])


def test_square_preprocessor_written_for_transformers(tmp_path):
    """A puhui run's square processing (DetrPreprocessor.square), written with to_hf, is what transformers reads
    from it; and from_hf reads it back unchanged."""
    ours = DetrPreprocessor.square(40)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(ours.to_hf()))
    want = _processor_cls().from_pretrained(tmp_path)(images=_images(), return_tensors="pt")
    pixels, mask = ours.preprocess(_images())
    assert pixels.shape == (2, 3, 40, 40) and mask.all()
    assert (pixels - want["pixel_values"]).abs().max() <= 1e-6 and torch.equal(mask, want["pixel_mask"])
    assert DetrPreprocessor.from_hf(ours.to_hf()) == ours


def test_bad_preprocessor_configs():
    for bad in ({"size": {"shortest_edge": 0}}, {"size": {"width": 10}}, {"size": "big"},
                {"image_mean": [0.5, 0.5]}, {"resample": 9}, {"pad_size": {"height": 10}}):
        with pytest.raises(Unsupported, match="^here: "):
            DetrPreprocessor.from_hf(bad, where="here")
    with pytest.raises(BadCheckpoint, match="not of its type"):
        DetrPreprocessor.from_hf({"rescale_factor": "a lot"})
    with pytest.raises(BadCheckpoint, match="not a JSON object"):
        DetrPreprocessor.from_hf(["size", 800])


def _copy(path, dst, edit):
    dst.mkdir()
    (dst / "config.json").write_text((path / "config.json").read_text())
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors")
    return dst


def test_unexpected_tensor_is_bad_checkpoint(pair, tmp_path):
    _, _, path = pair
    bad = _copy(path, tmp_path / "extra", lambda t: t.update({"model.extra_head.weight": torch.zeros(2)}))
    with pytest.raises(BadCheckpoint, match="model.extra_head.weight"):
        load_detr(bad)


def test_missing_tensor_is_bad_checkpoint(pair, tmp_path):
    _, _, path = pair
    bad = _copy(path, tmp_path / "missing", lambda t: t.pop("model.input_projection.bias"))
    with pytest.raises(BadCheckpoint, match="input_proj.bias"):
        load_detr(bad)


def test_unsupported_configs(pair):
    _, _, path = pair
    config = read_config(path)
    assert DetrConfig.from_hf(config).num_classes == 3
    timm = {k: v for k, v in config.items() if k != "backbone_config"} | {"use_timm_backbone": True}
    for bad in (timm, config | {"position_embedding_type": "learned"},
                config | {"backbone_config": {"model_type": "swin"}}, config | {"model_type": "yolos"}):
        with pytest.raises(Unsupported):
            DetrConfig.from_hf(json.loads(json.dumps(bad)))
    with pytest.raises(Unsupported, match="timm"):
        DetrConfig.from_hf(timm)
