"""The CLI doors: info, models (list / info / import / rm / pull), errors as one line and an exit code."""
import json

import pytest
import torch
from safetensors.torch import save_file

from puhui.hardware import probe
from puhui.settings import DEFAULT_ALIASES, get_settings

from conftest import run_cli


def test_info_json_reports_the_machine(home):
    r = run_cli("info", "--json", home=home)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    for key in ("physical_cores", "logical_cores", "ram_bytes", "isa", "gpus", "disk_free_bytes", "torch_version",
                "torch_threads"):
        assert key in info
    assert info["logical_cores"] >= 1 and info["ram_bytes"] > 2**28
    assert {"avx2", "avx512f", "amx_tile"} <= set(info["isa"])
    assert info["torch_version"] == torch.__version__
    text = run_cli("info", home=home)
    assert text.returncode == 0 and "cores" in text.stdout and "torch" in text.stdout


def test_probe_reads_isa_flags_from_cpuinfo():
    hw = probe()
    flags = open("/proc/cpuinfo").read().split()
    assert hw.isa["avx2"] == ("avx2" in flags)


def test_settings_home_aliases_and_toml(home):
    assert get_settings().store_dir == home / "models"
    assert get_settings().resolve("gpt-3.5-turbo") == DEFAULT_ALIASES["gpt-3.5-turbo"]
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('[aliases]\nmy-model = "smollm2-135m-instruct"\n')
    from puhui import settings
    settings._cached.cache_clear()
    s = get_settings()
    assert s.resolve("my-model") == "smollm2-135m-instruct"
    assert s.resolve("text-embedding-ada-002") == "all-minilm-l6-v2"  # defaults kept beside the user's


def test_models_import_info_list_rm(home, tmp_path):
    f = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(3, 4)}, str(f))
    r = run_cli("models", "import", str(f), "--name", "tiny", "--task", "classification", home=home)
    assert r.returncode == 0, r.stderr
    r = run_cli("models", "list", "--json", home=home)
    names = [m["name"] for m in json.loads(r.stdout)]
    assert "tiny" in names
    r = run_cli("models", "info", "tiny", "--json", home=home)
    m = json.loads(r.stdout)
    assert m["format"] == "safetensors" and len(m["files"][0]["sha256"]) == 64
    assert run_cli("models", "rm", "tiny", home=home).returncode == 0
    r = run_cli("models", "info", "tiny", home=home)
    assert r.returncode == 2 and "tiny" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_models_errors_are_one_line(home, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # an unreachable hub, as when offline
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 5)
    r = run_cli("models", "import", str(bad), "--name", "broken", home=home)
    assert r.returncode == 2 and "broken.gguf" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("models", "import", str(bad), "--name", "../escape", home=home)
    assert r.returncode == 2 and "../escape" in r.stderr
    r = run_cli("models", "pull", "some-org/some-model", home=home, timeout=120)
    assert r.returncode == 4 and "some-org/some-model" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_api_keys_from_env_comma_or_json(home, monkeypatch):
    from puhui import settings
    monkeypatch.setenv("PUHUI_API_KEYS", "k1, k2")
    settings._cached.cache_clear()
    assert get_settings().api_keys == ["k1", "k2"]
    monkeypatch.setenv("PUHUI_API_KEYS", '["k3"]')
    settings._cached.cache_clear()
    assert get_settings().api_keys == ["k3"]
    settings._cached.cache_clear()


def test_api_keys_parse_once_in_settings(home, monkeypatch):
    from puhui import settings
    from puhui.settings import parse_api_keys

    assert parse_api_keys("k1, k2,,") == ["k1", "k2"]
    assert parse_api_keys(' ["k3", "k,4", ""] ') == ["k3", "k,4"]
    assert parse_api_keys("[not json, k5") == ["[not json", "k5"]     # not a JSON list: split at commas
    assert parse_api_keys("") == [] and parse_api_keys(None) == []
    assert parse_api_keys(["a", " "]) == ["a"]
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('api_keys = ["t1"]\n')
    monkeypatch.delenv("PUHUI_API_KEYS", raising=False)
    settings._cached.cache_clear()
    assert get_settings().api_keys == ["t1"]
    monkeypatch.setenv("PUHUI_API_KEYS", "e1")          # the environment wins over the file
    settings._cached.cache_clear()
    assert get_settings().api_keys == ["e1"]
    settings._cached.cache_clear()


@pytest.mark.parametrize("env, expected", [("k1, k2", ["cli", "k1", "k2"]), ('["k3"]', ["cli", "k3"]),
                                           ("", ["cli"])])
def test_serve_takes_the_settings_keys(home, monkeypatch, env, expected):
    """`puhui serve` adds PUHUI_API_KEYS (read by settings.py, the one parser) to its --api-key options."""
    from typer.testing import CliRunner

    import puhui.serve
    from puhui import cli, settings

    seen = {}
    monkeypatch.setattr(puhui.serve, "serve", lambda models, **kw: seen.update(models=models, **kw))
    monkeypatch.setenv("PUHUI_API_KEYS", env)
    settings._cached.cache_clear()
    r = CliRunner().invoke(cli.app, ["serve", "--host", "0.0.0.0", "--model", "m", "--api-key", "cli"])
    settings._cached.cache_clear()
    assert r.exit_code == 0, r.output
    assert seen["models"] == ["m"] and seen["api_keys"] == expected


def test_serve_beyond_loopback_without_keys_is_refused(home, monkeypatch):
    monkeypatch.delenv("PUHUI_API_KEYS", raising=False)
    r = run_cli("serve", "--host", "0.0.0.0", "--model", "m", home=home)
    assert r.returncode == 2 and "PUHUI_API_KEYS" in r.stderr
