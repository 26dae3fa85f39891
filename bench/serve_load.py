"""Serving under load: puhui's server against llama.cpp's own `llama-server`, same GGUF, same clients, one run.

    python bench/serve_load.py                   # the benchmark; writes bench/results/serve_load.json
    python bench/serve_load.py --quick           # smoke run: 1 and 4 clients, 32 tokens, 10 s soak
    python bench/serve_load.py --skip llama.cpp  # puhui only

Each server runs as its own process on 2 threads: `puhui serve` with the packaged SmolLM2-135M-Instruct
(float32, and `--quant int4`: the GGUF's own 4-bit codes; continuous batching over 32 slots) and `llama-server -m SmolLM2-135M-Instruct.Q4_1.gguf -t 2
-np 32 -cb` (built by bench/build_llama_server.sh from the sources in the llama-cpp-python sdist). At 1, 4,
16 and 32 concurrent clients, every client streams one chat completion of exactly 128 tokens (greedy,
`ignore_eos`, each client its own short question) and we record:

- aggregate tokens/s: all streamed tokens over the wall time of the level;
- time to first token (p50, p95) and inter-token latency (p95 of the gaps between streamed chunks);
- failed requests (an HTTP error, a broken stream, or fewer than the asked tokens).

Then a soak: 32 clients, each asking again as soon as its answer ends, for 2 minutes, against puhui (int4): every
request must succeed. Targets, printed as PASS/FAIL: at 16 clients puhui's aggregate >= 4x its single-client
rate and >= 1x llama-server's; zero failures in the soak.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from _machine import machine  # noqa: E402  (bench/_machine.py)

os.environ.setdefault("PUHUI_HOME", str(Path.home() / ".cache" / "puhui"))

MODEL = "smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
QUESTIONS = ("the sea", "mountains", "a city at night", "the history of bread", "how bees talk", "rain",
             "a train journey", "the moon", "old libraries", "a market", "winter", "rivers", "clocks", "forests",
             "a lighthouse", "music")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on a free port, stopped on exit."""

    def __init__(self, name: str, argv: list[str], port: int, model_id: str, env: dict | None = None):
        self.name, self.argv, self.port, self.model_id = name, argv, port, model_id
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(RESULTS / f"serve_load_{name.replace('.', '_').replace('/', '_')}.log", "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        t = time.time()
        while time.time() - t < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not become ready in {timeout} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


async def one_request(client, server: Server, question: str, tokens: int) -> dict:
    """One streamed chat completion; its chunk times, token count and error, if any."""
    body = {"model": server.model_id, "messages": [{"role": "user", "content": f"Write a long essay about {question}."}],
            "max_tokens": tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    stamps, usage, error = [], None, None
    try:
        async with client.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
            else:
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        if (choice.get("delta") or {}).get("content"):
                            stamps.append(time.perf_counter())
    except Exception as e:  # noqa: BLE001 - a failed request is a result here
        error = f"{type(e).__name__}: {e}"
    n = (usage or {}).get("completion_tokens") or len(stamps)
    if error is None and n < tokens:
        error = f"{n} of {tokens} tokens"
    return {"t0": t0, "ttft": stamps[0] - t0 if stamps else None,
            "gaps": [b - a for a, b in zip(stamps, stamps[1:])], "tokens": n, "end": time.perf_counter(),
            "error": error}


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


async def level(server: Server, clients: int, tokens: int) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=30), limits=httpx.Limits(max_connections=256)) as c:
        t = time.perf_counter()
        results = await asyncio.gather(*(one_request(c, server, QUESTIONS[i % len(QUESTIONS)], tokens)
                                         for i in range(clients)))
        wall = time.perf_counter() - t
    ok = [r for r in results if r["error"] is None]
    n_tokens = sum(r["tokens"] for r in results)
    return {"clients": clients, "wall_s": wall, "tokens": n_tokens, "aggregate_tok_s": n_tokens / wall,
            "ttft_p50_s": pct([r["ttft"] for r in ok], 0.5), "ttft_p95_s": pct([r["ttft"] for r in ok], 0.95),
            "itl_p95_s": pct([g for r in ok for g in r["gaps"]], 0.95),
            "failed": len(results) - len(ok), "errors": sorted({r["error"] for r in results if r["error"]})[:5]}


async def soak(server: Server, clients: int, tokens: int, seconds: float) -> dict:
    import httpx

    stop = time.perf_counter() + seconds
    done: list[dict] = []

    async def client_loop(i: int, c):
        while time.perf_counter() < stop:
            done.append(await one_request(c, server, QUESTIONS[i % len(QUESTIONS)], tokens))

    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=30), limits=httpx.Limits(max_connections=256)) as c:
        t = time.perf_counter()
        await asyncio.gather(*(client_loop(i, c) for i in range(clients)))
        wall = time.perf_counter() - t
    failed = [r for r in done if r["error"]]
    return {"clients": clients, "seconds": wall, "requests": len(done), "failed": len(failed),
            "tokens": sum(r["tokens"] for r in done), "aggregate_tok_s": sum(r["tokens"] for r in done) / wall,
            "errors": sorted({r["error"] for r in failed})[:5]}


def start_puhui(threads: int, slots: int, weights: str) -> Server:
    port = free_port()
    argv = [sys.executable, "-c", "from puhui.cli import main; main()", "serve", "--port", str(port),
            "--model", MODEL, "--max-batch", str(slots), "--max-queue", "256", "--context", "1024"]
    if weights == "int4":
        argv += ["--quant", "int4"]
    env = {"PUHUI_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    return Server(f"puhui/{weights}", argv, port, MODEL, env)


def start_llama_server(binary: Path, gguf: Path, threads: int, slots: int) -> Server:
    port = free_port()
    argv = [str(binary), "-m", str(gguf), "-t", str(threads), "-tb", str(threads), "-c", str(slots * 512),
            "-np", str(slots), "--host", "127.0.0.1", "--port", str(port)]
    return Server("llama.cpp", argv, port, "smollm2")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--levels", default="1,4,16,32")
    ap.add_argument("--soak", type=float, default=120, help="seconds of the 32-client soak (0: none)")
    ap.add_argument("--skip", default="", help="llama.cpp to run puhui only")
    ap.add_argument("--weights", default="float32,int4",
                    help="puhui servers to measure: float32 (exact) and/or int4 (the GGUF's 4-bit codes)")
    ap.add_argument("--soak-on", default="int4", help="which puhui server the soak runs against")
    ap.add_argument("--llama-server", type=Path, default=ROOT / ".venv" / "llama-server" / "bin" / "llama-server")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.levels, args.tokens, args.soak = "1,4", 32, 10
    levels = [int(x) for x in args.levels.split(",")]
    slots = max(levels)
    RESULTS.mkdir(parents=True, exist_ok=True)

    from puhui import store

    store.register_defaults()
    gguf = store.model_file(MODEL)
    weights = [w.strip() for w in args.weights.split(",") if w.strip()]
    servers = [(f"puhui/{w}", lambda w=w: start_puhui(args.threads, slots, w)) for w in weights]
    skipped = {}
    if "llama.cpp" not in args.skip:
        binary = args.llama_server if args.llama_server.exists() else shutil.which("llama-server")
        if not binary:
            print(f"error: no llama-server at {args.llama_server}: run bench/build_llama_server.sh "
                  f"(or --skip llama.cpp)", file=sys.stderr)
            return 2
        servers.append(("llama.cpp", lambda: start_llama_server(Path(binary), gguf, args.threads, slots)))
    else:
        skipped["llama.cpp"] = "--skip"

    load_before = os.getloadavg()
    rows: dict[str, dict] = {}
    for name, start in servers:       # one server at a time: each gets the whole machine
        with start() as server:
            server.wait_ready()
            asyncio.run(level(server, 1, 8))                       # warm-up
            rows[name] = {"levels": {}}
            for n in levels:
                r = asyncio.run(level(server, n, args.tokens))
                rows[name]["levels"][str(n)] = r
                print(f"  {name:9s} {n:2d} clients: {r['aggregate_tok_s']:6.1f} tok/s, ttft p50 "
                      f"{r['ttft_p50_s'] or float('nan'):.2f} s, itl p95 {r['itl_p95_s'] or float('nan'):.3f} s, "
                      f"failed {r['failed']}", file=sys.stderr)
            if name == f"puhui/{args.soak_on}" and args.soak > 0:
                rows[name]["soak"] = s = asyncio.run(soak(server, slots, args.tokens, args.soak))
                print(f"  {name:9s} soak {s['clients']} clients {s['seconds']:.0f} s: {s['requests']} requests, "
                      f"{s['failed']} failed, {s['aggregate_tok_s']:.1f} tok/s", file=sys.stderr)

    targets = []
    for w in weights:
        p = rows[f"puhui/{w}"]["levels"]
        one, mid = p.get("1"), p.get("16") or p[str(max(levels))]
        if one:
            ratio = mid["aggregate_tok_s"] / one["aggregate_tok_s"]
            targets.append({"target": f"puhui/{w} {mid['clients']} clients >= 4x its 1 client", "value": ratio,
                            "pass": ratio >= 4})
        if "llama.cpp" in rows:
            ref = rows["llama.cpp"]["levels"][str(mid["clients"])]
            ratio = mid["aggregate_tok_s"] / ref["aggregate_tok_s"]
            targets.append({"target": f"puhui/{w} >= 1x llama-server at {mid['clients']} clients", "value": ratio,
                            "pass": ratio >= 1})
    soaked = [r["soak"] for r in rows.values() if "soak" in r]
    if soaked:
        s = soaked[0]
        targets.append({"target": f"zero failures in a {s['seconds']:.0f} s soak at {s['clients']} clients",
                        "value": s["failed"], "pass": s["failed"] == 0})

    out = {"benchmark": "serve_load", "model": MODEL, "gguf": gguf.name, "tokens_per_request": args.tokens,
           "threads": args.threads, "slots": slots, "levels": levels, "servers": rows, "targets": targets,
           "skipped": skipped, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "machine": machine()}
    args.out.write_text(json.dumps(out, indent=1))
    print(f"\n{'clients':>8s} " + " ".join(f"{name:>22s}" for name in rows))
    for n in levels:
        cells = []
        for name in rows:
            r = rows[name]["levels"][str(n)]
            cells.append(f"{r['aggregate_tok_s']:7.1f} tok/s ttft {r['ttft_p50_s'] or float('nan'):5.2f}s")
        print(f"{n:8d} " + " ".join(f"{c:>22s}" for c in cells))
    for t in targets:
        print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']:.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
