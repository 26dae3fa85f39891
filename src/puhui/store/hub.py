"""Pulling a model from the Hugging Face Hub into the store (the one part of the store that needs a network).

The repository is downloaded into a `.tmp-pull-...` folder of the store root and moved into the model by the
same atomic install as every other model. What is taken: the one file asked for (`filename`, e.g. one
quantisation of a GGUF repository); else, from a safetensors repository, the safetensors weights and the
configs without the other formats' copies of the weights (.bin, .onnx, .gguf ...); a repository of several GGUF
files and no safetensors is refused, asking for one. The licence is the model card's.

Hub errors become ours: offline (HF_HUB_OFFLINE, no network, a timeout) -> Offline, gated -> BadInput naming
HF_TOKEN, no such repository or revision -> ModelNotFound; any other error is ours or a bug, and is not hidden
behind "offline". A bad `task` is refused before anything is downloaded.
"""
from __future__ import annotations

import secrets
import shutil

from ..errors import BadInput, ModelNotFound, Offline, Unsupported
from ..progress import ProgressFn, silent
from .describe import describe, task_name, walk
from .install import Source, install_model, store_root
from .manifest import Manifest, check_name, stored_name

_SKIP_WHEN_SAFETENSORS = (".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".tflite", ".onnx", ".gguf")


def pull(hub_id: str, name: str | None = None, task: str | None = None, filename: str | None = None,
         revision: str | None = None, progress: ProgressFn | None = None) -> Manifest:
    """Download a model from the Hugging Face Hub into the store (needs a network).
    filename: one file of the repository to take (e.g. one quantisation of a GGUF repository)."""
    name = check_name(name or hub_id.rstrip("/").split("/")[-1].lower())
    task = task_name(task) if task else None
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError:
        raise Unsupported("pulling from the Hub needs huggingface_hub: pip install huggingface_hub") from None
    root = store_root()
    dl = root / f".tmp-pull-{name}-{secrets.token_hex(4)}"
    try:
        try:
            info = HfApi().model_info(hub_id, revision=revision)
            listed = [s.rfilename for s in (info.siblings or [])]
            allow = _pull_patterns(hub_id, listed, filename)
            snapshot_download(hub_id, revision=revision, local_dir=str(dl), allow_patterns=allow)
        except Exception as e:
            err = _hub_error(hub_id, e)
            if err is e:
                raise
            raise err from None
        rels = walk(dl)
        if not rels:
            raise BadInput(f"{hub_id}: nothing to download (files: {', '.join(listed) or 'none'})")
        facts = describe(dl, rels, task)
        card_data = getattr(info, "card_data", None) or getattr(info, "cardData", None) or {}
        lic = card_data.get("license") if hasattr(card_data, "get") else getattr(card_data, "license", None)
        facts["licence"] = lic if isinstance(lic, str) else facts.get("licence")
        src = f"hf:{hub_id}" + (f"@{revision}" if revision else "")
        return install_model(name, facts, [Source(stored_name(r), "move", [dl / r]) for r in rels], src,
                             progress or silent)
    finally:
        shutil.rmtree(dl, ignore_errors=True)


def _pull_patterns(hub_id: str, listed: list[str], filename: str | None) -> list[str] | None:
    if filename is not None:
        if listed and filename not in listed:
            raise BadInput(f"{hub_id} has no file {filename!r}")
        return [filename]
    ggufs = [f for f in listed if f.endswith(".gguf")]
    if any(f.endswith(".safetensors") for f in listed):
        keep = [f for f in listed if not f.endswith(_SKIP_WHEN_SAFETENSORS)
                and not f.startswith(("onnx/", "openvino/", "coreml/"))]
        return keep or None
    if len(ggufs) > 1:
        raise BadInput(f"{hub_id} holds several GGUF files; choose one with --file: " + ", ".join(ggufs))
    return None


def _hub_error(hub_id: str, e: Exception) -> Exception:
    try:
        from huggingface_hub import errors as hf
    except ImportError:  # older huggingface_hub
        from huggingface_hub.utils import _errors as hf
    offline_types = tuple(t for t in (getattr(hf, "OfflineModeIsEnabled", None),
                                      getattr(hf, "LocalEntryNotFoundError", None)) if t)
    if isinstance(e, offline_types):
        return Offline(f"cannot reach the Hugging Face Hub to pull {hub_id}: offline "
                       f"(HF_HUB_OFFLINE is set, or no network)")
    gated = getattr(hf, "GatedRepoError", None)
    if gated and isinstance(e, gated):
        return BadInput(f"{hub_id} is gated on the Hugging Face Hub: accept its licence there and set HF_TOKEN")
    missing = tuple(t for t in (getattr(hf, "RepositoryNotFoundError", None),
                                getattr(hf, "RevisionNotFoundError", None)) if t)
    if isinstance(e, missing):
        return ModelNotFound(f"{hub_id}: no such model (or revision) on the Hugging Face Hub")
    network = isinstance(e, OSError) or type(e).__module__.split(".")[0].startswith((
        "httpx", "httpcore", "requests", "urllib3", "huggingface_hub"))
    if not network:
        return e  # a bug or our own error: not hidden behind "offline"
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return Offline(f"cannot reach the Hugging Face Hub to pull {hub_id}: offline? ({type(e).__name__}: "
                   f"{reason[:160]})")
