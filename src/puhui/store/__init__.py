"""The model store: one folder per model name under $PUHUI_HOME/models, holding manifest.json, a README.md
model card, and the model's files (copied in, or symlinks to files referenced where they lie).

One job a file, imports running one way (each imports only those above it):
- integrity.py: whether a model's files are still those its manifest records (cheap at each load, a full
  sha256 once and on `verify`);
- manifest.py: `Manifest` and `ModelFile` (a manifest knows its folder and resolves its files, checked),
  reading manifests, model and file names, checks of referenced files;
- describe.py: what a folder of model files is (format, architecture, task, main file, facts), the task
  kinds (`TASKS`, `task_name`);
- install.py: the store root, atomic build-and-swap, `import_path`, `save_model`, `remove`, crash recovery,
  streamed sha256;
- packages.py: models in installed Python distributions, `import_package`, `register_defaults`;
- hub.py: `pull` from the Hugging Face Hub.

This file finds a model by name (`get`: aliases resolved, a packaged default registered on first use) and
checks models in full (`verify`, for `puhui models verify`). A
model's manifest is read once, here, and handed down: models and tasks find their files through it
(`Manifest.path`, `Manifest.folder`), not by asking the store again; `model_dir` and `model_file` remain for
callers that hold only a name.
"""
from __future__ import annotations

from pathlib import Path

from .. import packaged
from ..errors import ModelNotFound
from ..progress import ProgressFn, silent
from ..settings import get_settings
from .describe import TASK_ALIASES, TASKS, WEIGHT_SUFFIXES, sentence_facts, task_name
from .hub import pull
from .install import CHUNK, import_path, remove, save_model, sha256_file, store_root
from .integrity import Problem, Report
from .manifest import Manifest, ModelFile, check_name, read_json, read_manifest, refs_problem
from .packages import import_package, register_default, register_defaults

__all__ = ["CHUNK", "Manifest", "adapter_problem", "adapters_of", "ModelFile", "Problem", "Report", "TASKS", "TASK_ALIASES", "WEIGHT_SUFFIXES",
           "check_name", "get", "import_package", "import_path", "list_models", "model_dir", "model_file", "pull",
           "read_json", "register_defaults", "remove", "save_model", "sentence_facts", "sha256_file", "store_root",
           "task_name", "verify"]


def list_models() -> list[Manifest]:
    """Every model of the store, by name."""
    out = []
    for d in sorted(store_root().iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        m = read_manifest(d)
        if m is not None:
            out.append(m)
    return out


def adapters_of(base: str) -> list[Manifest]:
    """The LoRA adapters of the store made on model `base` (their manifest's extra["adapter"]["base"])."""
    return [m for m in list_models() if isinstance(m.extra.get("adapter"), dict)
            and m.extra["adapter"].get("base") == base]


def adapter_problem(adapter: Manifest, base) -> str | None:
    """Why adapter manifest `adapter` does not fit the base's manifest (the base's weights are not those it was
    trained on: another sha256), or None."""
    want = adapter.extra["adapter"].get("base_sha256")
    have = {f.name: f.sha256 for f in getattr(base, "files", ())}.get(getattr(base, "main", None) or "")
    if want and have and want != have:
        return (f"its base {adapter.extra['adapter'].get('base')!r} has changed since it was trained (sha256 "
                f"{have[:12]}..., the adapter was made on {want[:12]}...)")
    return None


def get(name: str) -> Manifest:
    """The manifest of a model (aliases resolved). A packaged default that is installed but not yet
    registered is registered on first use."""
    real = get_settings().resolve(name)
    check_name(real)
    m = read_manifest(store_root() / real)
    problem = refs_problem(m) if m is not None else None
    default = packaged.find(real)
    if (m is None or problem is not None) and default is not None and default.installed():
        return register_default(default, silent, m)
    if m is None:
        alias = f" (alias of {real!r})" if real != name else ""
        raise ModelNotFound(f"no model {name!r}{alias} in the store {get_settings().store_dir}; "
                            f"see `puhui models list`, or import one with `puhui models import`")
    if problem is not None:
        raise problem
    return m


def model_dir(name: str) -> Path:
    """The model's folder: manifest.json, README.md and every file of the model (referenced ones as symlinks)."""
    return get(name).folder


def model_file(name: str, filename: str | None = None) -> Path:
    """The real path of one of the model's files, copied or referenced; by default the main weights file."""
    return get(name).path(filename)


def verify(name: str | None = None, progress: ProgressFn | None = None) -> list[Report]:
    """Check every file of a model (an alias is resolved), or of every model of the store, in full against the
    sha256 its manifest records, whatever was remembered of earlier checks: one Report a model, naming each
    missing or damaged file. A damaged file found here is also refused at its next load."""
    if name is None:
        models = list_models()
    else:
        real = get_settings().resolve(name)
        check_name(real)
        m = read_manifest(store_root() / real)   # as it is: a referenced file that vanished is reported, not raised
        models = [m if m is not None else get(name)]
    return [Report(m.name, m.problems(progress)) for m in models]
