"""DETR-R50 inference speed: puhui's DETR against transformers' DetrForObjectDetection, the same checkpoint and
the same 800-pixel image, in float32 and with int8 dynamic quantization of the linear layers.

    python bench/detect.py               # the benchmark; writes bench/results/detect.json
    python bench/detect.py --quick       # a smoke run: 2 repeats
    python bench/detect.py --repeats 7 --threads 2 --height 800 --width 1066

The checkpoint is facebook/detr-resnet-50's architecture (transformers' ResNet-50 backbone, 6 + 6 transformer
layers of width 256, 100 queries, 91 classes) with random weights from a fixed seed, saved locally with
`save_pretrained` and loaded by both (random weights are fine for speed, and no hub is needed). The input is one
image of --height x --width pixels (800 x 1066: a 4:3 photograph at DETR's 800-pixel shorter side), normalised
pixels and a full pixel mask; the timing is of the model's forward pass under torch.inference_mode.

- puhui: `load_detr` then `prepare_for_inference` (batch norms folded into the convolutions, channels-last
  backbone, in-place activations), as `puhui.load(...)` serves a detector.
- transformers: `DetrForObjectDetection.from_pretrained(...).eval()`, its default attention.
- int8: `torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, torch.qint8)` applied to each (the
  transformer's and heads' linear layers; the convolutions stay float32).

"Equal outputs" is checked, not assumed: max |delta| of the class logits and the boxes between the two in each
precision (float32 must agree to 1e-4). The engines run interleaved, repeat after repeat, after an untimed
warm-up; medians are reported, with the load average. Target, printed as PASS/FAIL: puhui float32 >= 1.3x
transformers float32 images/s.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _machine import machine  # noqa: E402  (bench/_machine.py)

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 1.3


def build_checkpoint(folder: Path, seed: int = 0) -> None:
    import transformers

    torch.manual_seed(seed)
    config = transformers.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, num_labels=91,
                                     backbone_config=transformers.ResNetConfig(out_features=["stage4"]))
    model = transformers.DetrForObjectDetection(config).eval()
    with torch.no_grad():   # batch-norm statistics as a trained network has them, not 0 and 1
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    model.save_pretrained(folder)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--width", type=int, default=1066)
    ap.add_argument("--quick", action="store_true", help="2 repeats")
    ap.add_argument("--out", default=str(RESULTS / "detect.json"))
    a = ap.parse_args()
    if a.quick:
        a.repeats = 2
    torch.set_num_threads(a.threads)
    try:
        import transformers
    except ImportError:
        print("transformers is not installed: pip install 'puhui[bench]'", file=sys.stderr)
        return 2
    from torch.ao.quantization import quantize_dynamic

    from puhui.models.detr import load_detr, prepare_for_inference

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    folder = Path(tempfile.mkdtemp(prefix="puhui-bench-detr-")) / "detr-r50-random"
    build_checkpoint(folder)
    hf = transformers.DetrForObjectDetection.from_pretrained(folder).eval()
    ours = prepare_for_inference(load_detr(folder)[0])
    engines = {"transformers float32": lambda x, m: _hf_out(hf, x, m), "puhui float32": ours}
    hf8 = quantize_dynamic(copy.deepcopy(hf), {torch.nn.Linear}, dtype=torch.qint8)
    ours8 = quantize_dynamic(copy.deepcopy(ours), {torch.nn.Linear}, dtype=torch.qint8)
    engines.update({"transformers int8": lambda x, m: _hf_out(hf8, x, m), "puhui int8": ours8})

    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(1, 3, a.height, a.width, generator=g)
    mask = torch.ones(1, a.height, a.width, dtype=torch.long)
    print(f"DETR-R50 (random weights) on a {a.height}x{a.width} image; {a.threads} threads; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    times: dict[str, list[float]] = {k: [] for k in engines}
    outputs = {}
    with torch.inference_mode():
        for name, run in engines.items():
            outputs[name] = run(pixels, mask)                   # warm-up, and the outputs compared
        for r in range(a.repeats):
            for name, run in engines.items():
                t0 = time.perf_counter()
                run(pixels, mask)
                times[name].append(time.perf_counter() - t0)
            print(f"  repeat {r + 1}/{a.repeats}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                  flush=True)
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = {"seconds_per_image": round(med, 4), "images_per_s": round(1 / med, 3),
                      "all_seconds": [round(t, 4) for t in ts]}
    agreement = {}
    for prec in ("float32", "int8"):
        (hl, hb), (ol, ob) = outputs[f"transformers {prec}"], outputs[f"puhui {prec}"]
        agreement[prec] = {"max_abs_logits": float((hl - ol).abs().max()), "max_abs_boxes": float((hb - ob).abs().max())}
        ratio = rows[f"puhui {prec}"]["images_per_s"] / rows[f"transformers {prec}"]["images_per_s"]
        rows[f"puhui {prec}"]["vs_transformers"] = round(ratio, 3)
    equal = agreement["float32"]["max_abs_logits"] <= 1e-4 and agreement["float32"]["max_abs_boxes"] <= 1e-4
    ratio = rows["puhui float32"]["vs_transformers"]
    passed = equal and ratio >= TARGET
    print(f"\n{'engine':24s} {'s/image':>8s} {'images/s':>9s} {'vs transformers':>16s}")
    for name, row in rows.items():
        vs = f"{row['vs_transformers']:.2f}x" if "vs_transformers" in row else ""
        print(f"{name:24s} {row['seconds_per_image']:8.3f} {row['images_per_s']:9.3f} {vs:>16s}")
    for prec, d in agreement.items():
        print(f"outputs, puhui vs transformers, {prec}: max |d logits| {d['max_abs_logits']:.2e}, "
              f"max |d boxes| {d['max_abs_boxes']:.2e}")
    print(f"target: puhui float32 >= {TARGET}x transformers at equal outputs: {ratio:.2f}x "
          f"{'PASS' if passed else 'FAIL'}")
    out = {
        "benchmark": "detect", "model": "DETR-R50 (facebook/detr-resnet-50 architecture, random weights)",
        "image": [a.height, a.width], "threads": a.threads, "repeats": a.repeats, "results": rows,
        "agreement": agreement, "target": {"puhui_float32_vs_transformers": TARGET, "ratio": ratio, "pass": passed},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "machine": machine(),
        "command": "python bench/detect.py " + " ".join(sys.argv[1:]),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out}")
    return 0


def _hf_out(model, pixels, mask):
    out = model(pixel_values=pixels, pixel_mask=mask)
    return out.logits, out.pred_boxes


if __name__ == "__main__":
    sys.exit(main())
