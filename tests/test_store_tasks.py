"""The store's task kinds (our names and the Hugging Face pipeline names that map onto them, refused otherwise at
import), and the manifest handed down to models and tasks: read once by `puhui.load`, its files found through it."""
from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import pytest

import puhui
from puhui import packaged, store, tasks
from puhui.errors import BadInput

from conftest import run_cli

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_home(home):
    """Every test here in its own PUHUI_HOME (conftest's `home`)."""


def visible(home: Path) -> list[str]:
    root = home / "models"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.fixture
def weights(tmp_path) -> Path:
    f = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(3)}, str(f))
    return f


def refused_naming_the_tasks(e: BadInput, task: str) -> None:
    assert e.param == "task" and f"unknown task {task!r}" in str(e)
    for t in store.TASKS:
        assert t in str(e)
    assert "object-detection (detection)" in str(e)


# ------------------------------------------------------------------------------------------------ task names

def test_every_task_kind_opens():
    assert set(store.TASKS) == set(tasks.REGISTRY)
    assert set(store.TASK_ALIASES.values()) <= set(store.TASKS)
    assert {d.task for d in packaged.DEFAULTS} <= set(store.TASKS)


@pytest.mark.parametrize("hf, ours", sorted(store.TASK_ALIASES.items()))
def test_import_records_our_task_for_a_hugging_face_name(weights, home, hf, ours):
    m = store.import_path(weights, "w", task=hf)
    assert m.task == ours
    assert json.loads((home / "models" / "w" / "manifest.json").read_text())["task"] == ours
    assert tasks.manifest("w", ours).task == ours       # later uses find the kind their class opens
    assert tasks.manifest("w", hf).task == ours


def test_unknown_task_refused_at_import(weights, home, tmp_path, monkeypatch):
    with pytest.raises(BadInput) as e:
        store.import_path(weights, "w", task="banana")
    refused_naming_the_tasks(e.value, "banana")
    with pytest.raises(BadInput) as e:
        store.save_model("w", "object-detector", None, "other", {"a.txt": b"x"})
    refused_naming_the_tasks(e.value, "object-detector")

    site = tmp_path / "site"   # an installed distribution carrying weights
    info = site / "fake_weights-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "fake_weights").mkdir()
    (site / "fake_weights" / "w.safetensors").write_bytes(weights.read_bytes())
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-weights\nVersion: 1.0\n")
    (info / "RECORD").write_text("fake_weights/w.safetensors,,\nfake_weights-1.0.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(BadInput) as e:
        store.import_package("fake-weights", task="banana")
    refused_naming_the_tasks(e.value, "banana")
    assert store.import_package("fake-weights", task="object-detection").task == "detection"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInput) as e:              # refused before any download (not Offline)
        store.pull("someone/some-model", task="banana")
    refused_naming_the_tasks(e.value, "banana")
    assert visible(home) == ["fake-weights"]


def test_cli_task_names(weights, home, monkeypatch):
    r = run_cli("models", "import", str(weights), "--name", "w", "--task", "object-detection", home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("imported w: detection,")
    for args in (("models", "import", str(weights), "--name", "v", "--task", "banana"),
                 ("models", "pull", "someone/some-model", "--task", "banana")):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        r = run_cli(*args, home=home)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: unknown task 'banana': use one of ")
        assert all(t in lines[0] for t in store.TASKS) and "Traceback" not in r.stderr
    assert visible(home) == ["w"]


# ------------------------------------------------------------------------------------------------ handed down

WORDS = ["hello", "world", "the", "quick", "brown", "fox", "a", "cat", "sleeps"]


def tiny_sentence_model(path: Path) -> Path:
    """A sentence-transformers folder with a random 1-layer BERT: cls pooling, no Normalize, max_seq_length 16."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                ("[SEP]", 3)])
    path.mkdir(parents=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512, "pad_token": "[PAD]"}))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertModel(config)
    model.config._attn_implementation = "eager"
    model.eval().save_pretrained(path, safe_serialization=True)
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    (path / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
         {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    return path


@pytest.fixture
def counted(monkeypatch):
    """The names of the manifests parsed from disk; looking a model up by name again fails the test."""
    names = []
    real = store.Manifest.from_dict.__func__

    def from_dict(cls, d):
        names.append(d.get("name"))
        return real(cls, d)

    def by_name(*args, **kw):
        raise AssertionError(f"the store was asked by name again: {args}")

    monkeypatch.setattr(store.Manifest, "from_dict", classmethod(from_dict))
    monkeypatch.setattr(store, "model_dir", by_name)
    monkeypatch.setattr(store, "model_file", by_name)
    return names


def test_sentence_facts_parsed_once_into_the_manifest(tmp_path):
    from puhui.models.loader import load_sentence_encoder

    folder = tiny_sentence_model(tmp_path / "st")
    m = store.import_path(folder, "tiny-st")
    assert (m.task, m.architecture) == ("embeddings", "bert")
    facts = {k: m.extra[k] for k in ("pooling", "normalize", "max_seq_length", "dim")}
    assert facts == {"pooling": "cls", "normalize": False, "max_seq_length": 16, "dim": 32}
    assert store.sentence_facts(folder) == facts                     # the one parser, read from the folder
    e = load_sentence_encoder(m)
    assert (e.pooling, e.normalize, e.max_length, e.dim) == ("cls", False, 16, 32)

    m.extra["pooling"] = "max"                                       # the loader reads the manifest it is given
    assert load_sentence_encoder(m).pooling == "max"
    old = store.get("tiny-st")                                       # as written by an older version
    for k in ("normalize", "max_seq_length"):
        old.extra.pop(k)
    e = load_sentence_encoder(old)
    assert (e.pooling, e.normalize, e.max_length) == ("cls", False, 16)
    e = load_sentence_encoder(folder)                                # a local folder, as it is
    assert (e.pooling, e.normalize, e.max_length) == ("cls", False, 16)


def test_loading_a_tiny_local_model_reads_its_manifest_once(tmp_path, counted):
    store.import_path(tiny_sentence_model(tmp_path / "st"), "tiny-st")
    counted.clear()
    e = puhui.load("tiny-st")
    assert counted == ["tiny-st"]
    assert (e.encoder.pooling, e.encoder.normalize, e.max_length) == ("cls", False, 16)
    v = e.embed(["hello world", "the quick brown fox"])
    assert v.shape == (2, 32) and not torch.allclose(torch.from_numpy(v).norm(dim=-1), torch.ones(2))


def installed(package: str) -> bool:
    try:
        metadata.version(package)
        return True
    except metadata.PackageNotFoundError:
        return False


@pytest.mark.parametrize("name", ["all-minilm-l6-v2", "whisper-tiny.en"])
def test_loading_a_packaged_model_reads_its_manifest_once(name, counted):
    default = packaged.find(name)
    if not default.installed():
        pytest.skip(f"{default.package} not installed (pip install 'puhui[models]')")
    store.register_defaults(names=[name])
    counted.clear()
    model = puhui.load(name)
    assert counted == [name]
    assert model.task == default.task
    if name == "all-minilm-l6-v2":
        assert (model.encoder.pooling, model.encoder.normalize, model.max_length) == ("mean", True, 256)
    else:
        assert model.folder == Path(os.environ["PUHUI_HOME"]) / "models" / name
