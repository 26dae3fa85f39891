"""Structured outputs: what a JSON schema costs a decode, against the same decode unconstrained.

    python bench/constrained.py                # writes bench/results/constrained.json

On the packaged SmolLM2-135M-Instruct (int4 weights, 2 threads), the same prompts are answered greedily with
and without a JSON schema for the same number of tokens (ignore_eos: the unconstrained answer is not cut short,
and the constrained one must fill max_tokens inside the schema's long string field); decode tokens/s of both,
every repeat kept. Also llguidance run directly: the schema's compile time, a matcher's start, the per-token
check the sampler makes (validate_tokens) and a whole mask (compute_bitmask) over the 49,152-token vocabulary.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe, machine  # noqa: E402  (bench/_machine.py)

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "smollm2-135m-instruct"
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"},
                                           "summary": {"type": "string"}},
          "required": ["title", "year", "summary"], "additionalProperties": False}
PROMPTS = ["Describe a famous film as JSON with its title, year and a long summary.",
           "Describe a famous book as JSON with its title, year and a long summary.",
           "Describe a famous song as JSON with its title, year and a long summary."]


def decode_rate(gen, prompt: str, n: int, **structure) -> float:
    """Decode tokens a second of one greedy answer of n tokens (the prefill's step left out)."""
    req = gen.prepare([{"role": "user", "content": prompt}], max_tokens=n, temperature=0, ignore_eos=True,
                      **structure)
    stamps = []
    for out in gen.engine.outputs(gen.enqueue([req])):
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def library(gen) -> dict:
    """llguidance alone over the model's vocabulary: compile, start, one check, one mask."""
    import llguidance

    from puhui.engine.constraints import Structure

    grammars = gen.engine.grammars()
    t = time.perf_counter()
    grammars._grammars.clear()
    grammars.compile(Structure.json_schema(SCHEMA))
    compile_s = time.perf_counter() - t
    grammar = grammars.compile(Structure.json_schema(SCHEMA))
    t = time.perf_counter()
    matcher = llguidance.LLMatcher(grammars.llg_tokenizer, grammar)
    start_s = time.perf_counter() - t
    t = time.perf_counter()
    for token in range(2000):
        matcher.validate_tokens([token])
    check_s = (time.perf_counter() - t) / 2000
    t = time.perf_counter()
    for _ in range(50):
        matcher.compute_bitmask()
    mask_s = (time.perf_counter() - t) / 50
    return {"compile_ms": compile_s * 1e3, "matcher_start_ms": start_s * 1e3, "check_us": check_s * 1e6,
            "mask_us": mask_s * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quant", default="int4", help="int4 (default) or none (float32)")
    ap.add_argument("--out", default=str(RESULTS / "constrained.json"))
    a = ap.parse_args()
    import puhui
    from puhui.settings import apply_threads

    apply_threads()
    gen = puhui.load(MODEL, max_batch=1, quant=None if a.quant == "none" else a.quant)
    decode_rate(gen, PROMPTS[0], 8)                      # warm-up, and llguidance's vocabulary built
    decode_rate(gen, PROMPTS[0], 8, json_schema=SCHEMA)
    free, constrained = [], []
    for _ in range(a.repeats):
        for p in PROMPTS:
            free.append(decode_rate(gen, p, a.tokens))
            constrained.append(decode_rate(gen, p, a.tokens, json_schema=SCHEMA))
    ratio = statistics.median(constrained) / statistics.median(free)
    m = machine()
    out = {"machine": m, "model": MODEL, "quant": a.quant, "tokens": a.tokens,
           "free_tok_s": free, "schema_tok_s": constrained, "median_free": statistics.median(free),
           "median_schema": statistics.median(constrained), "ratio": ratio, "target": 0.9,
           "llguidance": library(gen)}
    RESULTS.mkdir(exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"{describe(m)}")
    print(f"decode, {a.quant}, {a.tokens} tokens: free {out['median_free']:.1f} tok/s, with a JSON schema "
          f"{out['median_schema']:.1f} tok/s: {ratio:.2f}x (target >= 0.9x)")
    lib = out["llguidance"]
    print(f"llguidance: compile {lib['compile_ms']:.2f} ms, matcher start {lib['matcher_start_ms']:.2f} ms, "
          f"one token check {lib['check_us']:.2f} us, whole mask {lib['mask_us']:.0f} us")


if __name__ == "__main__":
    main()
