"""Many LoRA adapters served in one batch: 16 streaming clients spread over 4 adapters and the base, against 16
clients on the base alone, same server process, same run.

    python bench/lora_serving.py            # writes bench/results/lora_serving.json
    python bench/lora_serving.py --quick    # 4 clients, 32 tokens, 1 repeat

`puhui serve` runs the packaged SmolLM2-135M-Instruct (float32, 2 threads, 16 slots) in a throwaway PUHUI_HOME
holding 4 adapters of it (rank 16 on all seven projections, random non-zero weights, PEFT's file layout),
served beside the base from the store. Every client streams one chat completion of exactly 128 tokens
(greedy, ignore_eos). Levels alternate (base only, mixed) for each repeat; medians are reported. Target:
mixed aggregate tokens/s >= 0.8x the base-only aggregate.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _machine import describe, machine  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_load as sl  # noqa: E402  (bench/serve_load.py: the server process and the clients)

ADAPTERS = 4
TARGET = 0.8
PARTS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
         "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def make_adapters(home: Path, rank: int) -> list[str]:
    """ADAPTERS random adapters of the packaged model, in the store of `home` (PEFT's layout)."""
    os.environ["PUHUI_HOME"] = str(home)
    import torch
    from safetensors.torch import save_file

    from puhui import store

    base = store.register_defaults(names=[sl.MODEL])[0]
    main = {f.name: f.sha256 for f in base.files}[base.main]
    from puhui.tasks import load

    c = load(sl.MODEL, max_batch=1).model.config
    sizes = {"q_proj": (c.dim, c.n_heads * c.head_dim), "k_proj": (c.dim, c.n_kv_heads * c.head_dim),
             "v_proj": (c.dim, c.n_kv_heads * c.head_dim), "o_proj": (c.n_heads * c.head_dim, c.dim),
             "gate_proj": (c.dim, c.hidden_dim), "up_proj": (c.dim, c.hidden_dim), "down_proj": (c.hidden_dim, c.dim)}
    names = []
    for k in range(ADAPTERS):
        g = torch.Generator().manual_seed(k)
        tensors = {}
        for layer in range(c.n_layers):
            for part, group in PARTS.items():
                fan_in, fan_out = sizes[part]
                key = f"base_model.model.model.layers.{layer}.{group}.{part}"
                tensors[f"{key}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) / fan_in ** 0.5
                tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g) * 0.01
        folder = Path(tempfile.mkdtemp()) / f"a{k}"
        folder.mkdir()
        save_file(tensors, folder / "adapter_model.safetensors")
        (folder / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(PARTS),
            "task_type": "CAUSAL_LM", "bias": "none", "base_model_name_or_path": sl.MODEL}))
        name = f"bench-lora-{k}"
        store.save_model(name, "text-generation", "llama", "peft-lora",
                         {n: folder / n for n in ("adapter_config.json", "adapter_model.safetensors")},
                         main="adapter_model.safetensors", extra={"adapter": {"base": sl.MODEL, "base_sha256": main}})
        names.append(name)
    return names


async def run_level(server, models: list[str], clients: int, tokens: int) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=30)) as c:
        t = asyncio.get_running_loop().time()
        results = []

        async def one(i):
            results.append(await sl.one_request(c, _As(server, models[i % len(models)]), sl.QUESTIONS[i % 16], tokens))
        await asyncio.gather(*(one(i) for i in range(clients)))
        wall = asyncio.get_running_loop().time() - t
    n = sum(r["tokens"] for r in results)
    return {"models": sorted(set(models)), "clients": clients, "wall_s": wall, "tokens": n,
            "aggregate_tok_s": n / wall, "failed": sum(r["error"] is not None for r in results),
            "errors": sorted({r["error"] for r in results if r["error"]})[:3]}


class _As:
    """The server, as seen by a client that names `model_id`."""

    def __init__(self, server, model_id):
        self.url, self.model_id = server.url, model_id


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args(argv)
    clients, tokens, repeats = (4, 32, 1) if args.quick else (16, 128, 3)
    home = Path(tempfile.mkdtemp(prefix="puhui-bench-lora-"))
    names = make_adapters(home, args.rank)
    sl.RESULTS.mkdir(parents=True, exist_ok=True)
    server = sl.start_puhui(args.threads, 16, "float32")
    runs = {"base": [], "mixed": []}
    with server:
        server.wait_ready()
        asyncio.run(run_level(server, [sl.MODEL], 2, 8))          # warm-up
        for _ in range(repeats):
            runs["base"].append(asyncio.run(run_level(server, [sl.MODEL], clients, tokens)))
            runs["mixed"].append(asyncio.run(run_level(server, [sl.MODEL, *names], clients, tokens)))
    base = statistics.median(r["aggregate_tok_s"] for r in runs["base"])
    mixed = statistics.median(r["aggregate_tok_s"] for r in runs["mixed"])
    failed = sum(r["failed"] for rs in runs.values() for r in rs)
    ratio = mixed / base
    m = machine()
    print(f"machine: {describe(m)}")
    print(f"{clients} clients x {tokens} tokens, {ADAPTERS} adapters of rank {args.rank} + the base")
    print(f"  base only : {base:7.1f} tok/s   {[round(r['aggregate_tok_s'], 1) for r in runs['base']]}")
    print(f"  mixed     : {mixed:7.1f} tok/s   {[round(r['aggregate_tok_s'], 1) for r in runs['mixed']]}")
    print(f"  ratio {ratio:.2f}x (target >= {TARGET}x): {'PASS' if ratio >= TARGET and not failed else 'FAIL'}"
          f"; failed requests: {failed}")
    out = {"machine": m, "clients": clients, "tokens": tokens, "adapters": ADAPTERS, "rank": args.rank,
           "threads": args.threads, "quick": args.quick, "runs": runs, "base_tok_s": base, "mixed_tok_s": mixed,
           "ratio": ratio, "target": TARGET, "failed": failed}
    if not args.quick:
        (sl.RESULTS / "lora_serving.json").write_text(json.dumps(out, indent=2))
    return 0 if ratio >= TARGET and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
