"""Fault tests of the store: damaged files are found at load (cheaply) and by `puhui models verify`, never
answered from; damaged headers name the file; a writer killed with SIGKILL leaves a consistent store and no
temp folders once the next store operation ran."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from puhui import store
from puhui.errors import BadCheckpoint, ModelCorrupt, ModelNotFound

torch = pytest.importorskip("torch")
pytest.importorskip("gguf")
from safetensors.torch import save_file  # noqa: E402

from conftest import run_cli  # noqa: E402
from test_gguf import _write_tiny_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("PUHUI_HOME", str(h))
    return h


def flip(path: Path, offset: int) -> None:
    """Flip one byte of a file in place (its size stays, its mtime moves)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def gguf_data_offset(path: Path, tensor: str = "token_embd.weight") -> int:
    from puhui.formats.gguf import read_gguf
    return read_gguf(path).tensors[tensor].offset + 10


def safetensors_data_offset(path: Path) -> int:
    n = int.from_bytes(path.read_bytes()[:8], "little")
    return 8 + n + 5


def age(path: Path, seconds: float = 3600) -> None:
    """Move a file's mtime into the past (as a `touch -d` or a copy that keeps times would)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


@pytest.fixture
def tiny_gguf(tmp_path):
    return _write_tiny_model(tmp_path / "tiny.gguf", "llama")


def stored(name: str, filename: str | None = None) -> Path:
    m = store.get(name)
    f = m.file(filename or m.main)
    return Path(f.path) if f.path else m.folder / f.name


# ------------------------------------------------------------------------------------------------ recorded facts

def test_every_file_records_size_and_mtime(tmp_path):
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    save_file({"w": torch.ones(4)}, str(src / "model.safetensors"))
    m = store.import_path(src, "m")
    for f in m.files:
        st = (m.folder / f.name).stat()
        assert (f.size, f.mtime_ns) == (st.st_size, st.st_mtime_ns), f.name
    assert store.get("m") == m


# ------------------------------------------------------------------------------------------------ damage at load

def test_flipped_byte_in_a_stored_gguf_is_model_corrupt(tiny_gguf):
    m = store.import_path(tiny_gguf, "tiny")
    assert m.path() == m.folder / "tiny.gguf"          # intact: fine
    flip(m.folder / "tiny.gguf", gguf_data_offset(tiny_gguf))
    with pytest.raises(ModelCorrupt, match=r"tiny\.gguf.*damaged.*sha256") as e:
        store.get("tiny").path()
    assert isinstance(e.value, BadCheckpoint)
    assert (e.value.exit_code, e.value.http_status, e.value.code) == (2, 500, "model_corrupt")
    assert store.get("tiny").files[0].sha256 == m.files[0].sha256   # the record stands: the file is what is wrong


def test_a_file_is_hashed_in_full_once_then_checked_by_size_and_mtime(tiny_gguf, monkeypatch):
    from puhui.store import integrity

    hashed = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda path, *a, **k: hashed.append(Path(path).name) or
                        real(path, *a, **k))
    m = store.import_path(tiny_gguf, "tiny")
    hashed.clear()
    path = m.folder / "tiny.gguf"
    age(path)                     # a copy as old as its source: the first load hashes it, and remembers that
    store.get("tiny").path()
    assert hashed == ["tiny.gguf"]
    for _ in range(3):            # then each load costs a stat
        store.get("tiny").path()
    assert hashed == ["tiny.gguf"]
    age(path, 60)                 # touched, still intact: hashed again, trusted again
    store.get("tiny").path()
    store.get("tiny").path()
    assert hashed == ["tiny.gguf"] * 2
    flip(path, gguf_data_offset(tiny_gguf))
    with pytest.raises(ModelCorrupt, match="tiny.gguf"):
        store.get("tiny").path()
    with pytest.raises(ModelCorrupt, match="tiny.gguf"):  # and stays damaged
        store.get("tiny").path()


def test_a_size_change_is_damage_without_hashing(tiny_gguf):
    m = store.import_path(tiny_gguf, "tiny")
    with open(m.folder / "tiny.gguf", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelCorrupt, match=r"tiny\.gguf.*size"):
        store.get("tiny").path()


def test_a_referenced_file_damaged_in_place(tiny_gguf):
    m = store.import_path(tiny_gguf, "ref", copy=False)
    assert m.path() == tiny_gguf.resolve()
    flip(tiny_gguf, gguf_data_offset(tiny_gguf))
    with pytest.raises(ModelCorrupt, match=r"tiny\.gguf.*damaged"):
        store.get("ref").path()


def test_loading_a_hf_folder_checks_every_file(tmp_path):
    from puhui.models.loader import load_causal_lm

    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    save_file({"w": torch.ones(4)}, str(src / "model.safetensors"))
    m = store.import_path(src, "hf")
    flip(m.folder / "model.safetensors", safetensors_data_offset(m.folder / "model.safetensors"))
    with pytest.raises(ModelCorrupt, match=r"model\.safetensors.*damaged"):
        load_causal_lm(store.get("hf"))


# ------------------------------------------------------------------------------------------------ the CLI

def test_run_on_a_corrupted_gguf_exits_2_naming_the_file(tiny_gguf, home):
    m = store.import_path(tiny_gguf, "tiny")
    ok = run_cli("run", "tiny", "t1t3", "--max-tokens", "2", "--temperature", "0", home=home)
    assert ok.returncode == 0, ok.stderr
    flip(m.folder / "tiny.gguf", gguf_data_offset(tiny_gguf))
    r = run_cli("run", "tiny", "t1t3", "--max-tokens", "2", "--temperature", "0", home=home)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "tiny.gguf" in r.stderr and "damaged" in r.stderr


def _train_tiny_classifier(name="clf"):
    from puhui.tasks.classification import train_classifier
    return train_classifier(epochs=1, engine="numpy", name=name)


def _csv(tmp_path) -> Path:
    from puhui.tasks.classification import bundled_breast_cancer
    path = tmp_path / "rows.csv"
    bundled_breast_cancer().drop(columns=["diagnosis"]).head(5).to_csv(path, index=False)
    return path


def test_predict_on_a_corrupted_classifier_exits_2(tmp_path, home):
    _train_tiny_classifier()
    rows = _csv(tmp_path)
    ok = run_cli("predict", "clf", "--data", str(rows), home=home)
    assert ok.returncode == 0, ok.stderr
    weights = store.get("clf").folder / "model.safetensors"
    flip(weights, safetensors_data_offset(weights))
    r = run_cli("predict", "clf", "--data", str(rows), home=home)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "model.safetensors" in r.stderr and "damaged" in r.stderr


def test_models_verify(tmp_path, home, tiny_gguf):
    store.import_path(tiny_gguf, "a")
    store.save_model("b", "classification", None, "other", {"x.bin": b"12345", "y.json": b"{}"})
    r = run_cli("models", "verify", home=home)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].split() == ["a", "ok"] and lines[1].split() == ["b", "ok"]

    flip(store.get("a").folder / "tiny.gguf", gguf_data_offset(tiny_gguf))
    os.utime(store.get("a").folder / "tiny.gguf", ns=(0, store.get("a").files[0].mtime_ns))  # even with its mtime
    (store.get("b").folder / "y.json").unlink()
    r = run_cli("models", "verify", home=home)
    assert r.returncode == 2
    lines = r.stdout.strip().splitlines()
    assert lines[0].split(None, 1) == ["a", "damaged: tiny.gguf (sha256 mismatch)"]
    assert lines[1].split(None, 1) == ["b", "missing: y.json"]
    assert "Traceback" not in r.stderr and r.stderr.startswith("error: ")

    r = run_cli("models", "verify", "b", "--json", home=home)
    assert r.returncode == 2
    out = json.loads(r.stdout)
    assert [(m["model"], m["status"]) for m in out] == [("b", "missing")]
    assert out[0]["files"] == [{"file": "y.json", "problem": "missing", "path": str(store.get("b").folder / "y.json")}]

    assert run_cli("models", "verify", "nope", home=home).returncode == 2


def test_verify_hashes_what_the_cheap_check_trusts(tiny_gguf):
    m = store.import_path(tiny_gguf, "a")
    path = m.folder / "tiny.gguf"
    age(path)
    store.get("a").path()                             # hashed, remembered
    st = path.stat()
    flip(path, gguf_data_offset(tiny_gguf))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # damage that keeps size and mtime
    [report] = store.verify("a")
    assert report.status == "damaged" and report.line() == "damaged: tiny.gguf (sha256 mismatch)"
    with pytest.raises(ModelCorrupt):                 # and the load after it knows
        store.get("a").path()


# ------------------------------------------------------------------------------------------------ damaged headers

def _classifier_files(state: dict) -> dict:
    from puhui.data.tabular import TabularEncoder
    from puhui.tasks.classification import bundled_breast_cancer

    df = bundled_breast_cancer().drop(columns=["diagnosis"]).iloc[:, :3]
    enc = TabularEncoder.fit(df, source="test")
    extra = {"target": "diagnosis", "classes": ["benign", "malignant"], "encoder": enc.to_dict(),
             "feature_names": enc.feature_names, "hidden": [4]}
    from safetensors.torch import save
    return {"model.safetensors": save(state)}, extra


def test_a_renamed_tensor_in_a_classifier_names_the_file_and_the_key(tmp_path, home):
    import puhui
    from puhui.models.mlp import MLP, MLPConfig

    state = MLP(MLPConfig(n_in=3, n_out=2, hidden=(4,))).state_dict()
    files, extra = _classifier_files({k: v.contiguous() for k, v in state.items()})
    raw = files["model.safetensors"]
    assert b"layers.0.bias" in raw
    files["model.safetensors"] = raw.replace(b"layers.0.bias", b"layers.0.bhas", 1)  # a flipped header byte
    store.save_model("clf", "classification", "mlp", "safetensors", files, extra=extra, main="model.safetensors")
    with pytest.raises(BadCheckpoint, match=r"model\.safetensors.*damaged.*layers\.0\.bhas"):
        puhui.load("clf")
    rows = tmp_path / "rows.csv"
    from puhui.tasks.classification import bundled_breast_cancer
    bundled_breast_cancer().iloc[:3, :3].to_csv(rows, index=False)
    r = run_cli("predict", "clf", "--data", str(rows), home=home)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "model.safetensors" in r.stderr and "layers.0.bhas" in r.stderr


# ------------------------------------------------------------------------------------------------ the server

def test_the_server_refuses_a_corrupt_model_at_load(tiny_gguf, home):
    """The server loads its models in create_app (there is no lazy load at a request): a damaged one fails
    there, as ModelCorrupt, which answers HTTP 500 code model_corrupt; `puhui serve` exits 2 with one line."""
    from puhui.serve import create_app
    from puhui.serve.errors import from_puhui

    m = store.import_path(tiny_gguf, "tiny")
    flip(m.folder / "tiny.gguf", gguf_data_offset(tiny_gguf))
    with pytest.raises(ModelCorrupt, match="tiny.gguf") as e:
        create_app(["tiny"])
    api = from_puhui(e.value)
    assert api.status == 500
    body = api.body()["error"]
    assert body["code"] == "model_corrupt" and body["type"] == "server_error" and "tiny.gguf" in body["message"]
    r = run_cli("serve", "--model", "tiny", "--port", "0", home=home, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "tiny.gguf" in last and "damaged" in last


# ------------------------------------------------------------------------------------------------ killed writers

KILLER = textwrap.dedent("""
    import os, signal, shutil, sys
    from puhui import store
    from puhui.store import install

    what, name, src = sys.argv[1], sys.argv[2], sys.argv[3]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if what == "copy":      # SIGKILL half way through copying the weights
        def progress(p):
            if p.task.startswith("copy model.safetensors") and p.total and 0 < p.done < p.total:
                die()
        store.import_path(src, name, progress=progress)
    elif what == "hold":    # wait half way through copying the weights, until killed
        def progress(p):
            if p.task.startswith("copy model.safetensors") and p.total and 0 < p.done < p.total:
                print("holding", flush=True)
                import time
                time.sleep(600)
        store.import_path(src, name, progress=progress)
    elif what == "swap":    # SIGKILL between the two renames of a swap: the old version is aside
        real = os.rename
        def rename(a, b):
            real(a, b)
            if os.path.basename(str(b)).startswith(".old-"):
                die()
        install.os.rename = rename
        store.import_path(src, name)
    elif what == "remove":  # SIGKILL while deleting a removed model
        real = shutil.rmtree
        def rmtree(path, *a, **k):
            if os.path.basename(str(path)).startswith("."):
                os.remove(os.path.join(str(path), "manifest.json"))
                die()
            return real(path, *a, **k)
        install.shutil.rmtree = rmtree
        store.remove(name)
    sys.exit(3)             # not killed: the test is wrong
""")


def kill_during(what: str, name: str, src: Path | str, home: Path) -> None:
    env = dict(os.environ, PUHUI_HOME=str(home))
    r = subprocess.run([sys.executable, "-c", KILLER, what, name, str(src)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr


def dot_folders(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "models").iterdir() if p.name.startswith("."))


def big_folder(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    save_file({"w": torch.arange(2 << 20, dtype=torch.float32)}, str(path / "model.safetensors"))  # 8 MiB
    return path


def test_sigkill_during_an_import_leaves_no_temp_folder(tmp_path, home):
    keep = store.save_model("keep", "classification", None, "other", {"a.bin": b"x"})
    kill_during("copy", "big", big_folder(tmp_path / "big"), home)
    left = dot_folders(home)
    assert len(left) == 1 and left[0].startswith(".tmp-big-")        # what the kill left
    assert 0 < sum(f.stat().st_size for f in (home / "models" / left[0]).rglob("*")) < 8 << 20
    assert [m.name for m in store.list_models()] == ["keep"]          # the next operation
    assert dot_folders(home) == []
    assert store.get("keep") == keep
    with pytest.raises(ModelNotFound):
        store.get("big")
    m = store.import_path(tmp_path / "big", "big")                     # and the name is free
    assert store.get("big") == m


def test_sigkill_during_a_swap_puts_the_old_version_back_at_once(tmp_path, home):
    old = store.save_model("m", "classification", None, "other", {"a.txt": b"old"})
    kill_during("swap", "m", big_folder(tmp_path / "big"), home)
    assert not (home / "models" / "m").exists()
    assert store.get("m") == old and store.model_file("m", "a.txt").read_bytes() == b"old"
    assert dot_folders(home) == []
    assert {p.name for p in (home / "models" / "m").iterdir()} <= {"README.md", "a.txt", "manifest.json",
                                                                 ".puhui-verified.json"}


def test_sigkill_during_a_remove_does_not_bring_the_model_back(tmp_path, home):
    store.save_model("gone", "classification", None, "other", {"a.txt": b"x"})
    store.save_model("keep", "classification", None, "other", {"a.txt": b"y"})
    kill_during("remove", "gone", "-", home)
    assert [m.name for m in store.list_models()] == ["keep"]
    assert dot_folders(home) == [] and not (home / "models" / "gone").exists()


def test_temp_folders_of_live_writers_are_kept(tmp_path, home):
    """An import still running (in this process, or in another) keeps its temp folder; a folder with no
    writer recorded (made by an older puhui) is left to the day-old rule."""
    (home / "models").mkdir(parents=True)
    (home / "models" / ".tmp-unmarked-1234").mkdir()
    seen = []

    def progress(p):
        if p.task.startswith("copy model.safetensors") and p.total and 0 < p.done < p.total and not seen:
            seen.append(([m.name for m in store.list_models()], dot_folders(home)))

    m = store.import_path(big_folder(tmp_path / "big"), "big", progress=progress)
    [(models, dots)] = seen
    assert models == [] and len(dots) == 2 and dots[0].startswith(".tmp-big-")
    assert store.get("big") == m and dot_folders(home) == [".tmp-unmarked-1234"]

    env = dict(os.environ, PUHUI_HOME=str(home))
    child = subprocess.Popen([sys.executable, "-c", KILLER, "hold", "other", str(tmp_path / "big")], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "holding"
        assert [m.name for m in store.list_models()] == ["big"]
        dots = dot_folders(home)
        assert len(dots) == 2 and dots[0].startswith(".tmp-other-")       # its writer is alive
    finally:
        child.kill()
        child.wait()
    assert [m.name for m in store.list_models()] == ["big"]
    assert dot_folders(home) == [".tmp-unmarked-1234"]
