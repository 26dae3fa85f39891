"""LoRA training speed and memory: puhui against transformers + peft, same packaged SmolLM2-135M weights
(float32), rank 16 on all seven projections, batches of 4 x 256 tokens, AdamW, 2 threads, same run.

    python bench/finetune.py            # writes bench/results/finetune.json
    python bench/finetune.py --quick    # 2 timed steps

Each side runs in its own process (peak RSS is a process's own): it loads the model, wraps it with LoRA, runs
one warm-up step and then STEPS timed optimizer steps on the same token batches (made from a fixed seed), and
reports training tokens/s, seconds a step, its losses and its peak RSS. Targets (issue 17): >= 1.5x PEFT's
tokens/s, peak RSS <= 0.6x PEFT's. Both sides' loss curves go into one PNG.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _machine import describe, machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MODEL = "smollm2-135m-instruct"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def batches(vocab: int, steps: int, batch: int = 4, seq: int = 256):
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (batch, seq), generator=g) for _ in range(steps + 1)]


def run_side(side: str, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from puhui import store

    m = store.register_defaults(names=[MODEL])[0]
    if side == "puhui":
        from puhui.models.loader import load_causal_lm
        from puhui.train.lora import LoRA

        model = load_causal_lm(m, dtype=torch.float32).model.train()
        lora = LoRA(model, rank=16, alpha=32, targets=TARGETS)
        params = [p for p in lora.parameters() if p.requires_grad]

        def loss_of(ids):
            logits = lora(ids)[:, :-1]
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        vocab = model.config.vocab_size
    else:
        import peft
        import transformers

        path = m.path()
        hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                               torch_dtype=torch.float32)
        model = peft.get_peft_model(hf, peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS)).train()
        params = [p for p in model.parameters() if p.requires_grad]

        def loss_of(ids):
            return model(input_ids=ids, labels=ids).loss
        vocab = hf.config.vocab_size
    opt = torch.optim.AdamW(params, lr=1e-4)
    data = batches(vocab, steps)
    losses, times = [], []
    for i, ids in enumerate(data):
        t = time.perf_counter()
        loss = loss_of(ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:                                    # the first step warms up
            times.append(time.perf_counter() - t)
            losses.append(loss.item())
    tokens = data[0].numel() * len(times)
    return {"side": side, "tokens_per_s": tokens / sum(times), "step_s": times, "losses": losses,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "trainable": sum(p.numel() for p in params)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    steps = args.steps or (2 if args.quick else 6)
    if args.side:
        print(json.dumps(run_side(args.side, steps, args.threads)))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PUHUI_THREADS": str(args.threads)}
    sides = {}
    for side in ("puhui", "peft"):
        out = subprocess.run([sys.executable, __file__, "--side", side, "--steps", str(steps),
                              "--threads", str(args.threads)], capture_output=True, text=True, env=env)
        if out.returncode:
            print(out.stderr[-3000:])
            return 1
        sides[side] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, peft_ = sides["puhui"], sides["peft"]
    speed, rss = ours["tokens_per_s"] / peft_["tokens_per_s"], ours["peak_rss_mb"] / peft_["peak_rss_mb"]
    m = machine()
    print(f"machine: {describe(m)}")
    for s in (ours, peft_):
        print(f"  {s['side']:6s} {s['tokens_per_s']:7.1f} tokens/s  {sum(s['step_s']) / len(s['step_s']):.2f} s/step"
              f"  peak RSS {s['peak_rss_mb']:.0f} MB  trainable {s['trainable']:,}")
    print(f"  speed {speed:.2f}x PEFT (target >= 1.5x: {'PASS' if speed >= 1.5 else 'FAIL'}); "
          f"peak RSS {rss:.2f}x (target <= 0.6x: {'PASS' if rss <= 0.6 else 'FAIL'})")
    result = {"machine": m, "steps": steps, "threads": args.threads, "sides": sides, "speed_ratio": speed,
              "rss_ratio": rss, "quick": args.quick}
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "finetune.json").write_text(json.dumps(result, indent=2))
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for s in (ours, peft_):
            ax.plot(range(1, len(s["losses"]) + 1), s["losses"], marker="o", label=s["side"])
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("LoRA, SmolLM2-135M, rank 16, 4 x 256 tokens")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / "finetune_loss.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
