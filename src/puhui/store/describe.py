"""What a folder of model files is: its format, architecture, task, main weights file and a few facts
(licence, GGUF metadata, sentence-transformers pooling, Piper voice sample rate), from the files' suffixes,
configs and metadata (the model's name says nothing).

The task: a `--task` given by the user wins, and must be one of our task kinds (`TASKS`) or a Hugging Face
pipeline name that maps onto one (`TASK_ALIASES`, e.g. object-detection -> detection); anything else is
refused at import, naming the known ones (`task_name`), so that no manifest records a task no task class
opens. Without one, the task is guessed from config.json's architectures (the head: ...ForCausalLM,
...ForSequenceClassification ...), the sentence-transformers layout, a GGUF's architecture, a CTranslate2
Whisper config or a Piper voice config; a model it cannot tell is refused, asking for --task.

A sentence-transformers model's pooling, normalisation, maximum sequence length and dimension are parsed
here once (`sentence_facts`) into the manifest's extra, which is what the embeddings loader reads.

The licence: the model's own word (its card's front matter, its GGUF metadata) before its package's.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import BadInput
from .manifest import read_json, stored_name

WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".onnx", ".pt", ".pth")
_CODE_SUFFIXES = (".py", ".pyc", ".pyi", ".pyd", ".so")

# the task kinds a model of the store can have (tasks/__init__.py maps each to the class that opens it), and the
# Hugging Face pipeline names that mean the same
TASKS = ("text-generation", "embeddings", "classification", "recommendation", "detection", "transcription", "speech")
TASK_ALIASES = {"feature-extraction": "embeddings", "sentence-similarity": "embeddings",
                "text-classification": "classification", "tabular-classification": "classification",
                "object-detection": "detection", "automatic-speech-recognition": "transcription",
                "text-to-speech": "speech", "text-to-audio": "speech", "conversational": "text-generation"}


def task_name(task: str, param: str = "task") -> str:
    """Our task kind for one of ours or a Hugging Face pipeline name that maps onto one; BadInput otherwise."""
    if task in TASKS:
        return task
    if task in TASK_ALIASES:
        return TASK_ALIASES[task]
    hf = ", ".join(f"{k} ({v})" for k, v in TASK_ALIASES.items())
    raise BadInput(f"unknown task {task!r}: use one of {', '.join(TASKS)}, or a Hugging Face pipeline name that "
                   f"maps onto one: {hf}", param=param)


_TASK_BY_HEAD = [("ForCausalLM", "text-generation"), ("LMHeadModel", "text-generation"),
                 ("ForSequenceClassification", "classification"), ("ForObjectDetection", "detection"),
                 ("ForSpeechSeq2Seq", "transcription"), ("ForCTC", "transcription"),
                 ("ForTokenClassification", "token-classification"), ("ForMaskedLM", "fill-mask")]
_EMBEDDING_GGUF_ARCHS = {"bert", "nomic-bert", "jina-bert-v2", "modern-bert"}


def describe(root: Path, rels: list[str], task: str | None) -> dict:
    """format, architecture, task, main file and extra facts of the model made of root/rels."""
    names = set(rels)
    if ADAPTER_CONFIG in names:          # a PEFT LoRA adapter: what it runs on is the importer's to say
        config = read_json(root / ADAPTER_CONFIG)
        if not isinstance(config, dict):
            raise BadInput(f"{root}/{ADAPTER_CONFIG}: not a JSON object")
        if "adapter_model.safetensors" not in names:
            raise BadInput(f"{root}: a LoRA adapter without adapter_model.safetensors (puhui never reads "
                           f"adapter_model.bin: a pickle)")
        peft_base = config.get("base_model_name_or_path")
        return {"format": "peft-lora", "architecture": "lora", "task": "text-generation",
                "main": "adapter_model.safetensors",
                "extra": {"adapter": {"peft_base": peft_base if isinstance(peft_base, str) else None,
                                      "r": config.get("r"), "lora_alpha": config.get("lora_alpha"),
                                      "target_modules": config.get("target_modules")}}}
    fmt = _format(root, rels)
    facts: dict = {"format": fmt, "architecture": None, "extra": {}, "main": main_file(rels, fmt)}
    guess = None
    config = read_json(root / "config.json") if "config.json" in names else None
    if "README.md" in names:  # a Hub model card: YAML front matter with "license: ..."
        facts["licence"] = _readme_licence(root / "README.md")
    if fmt == "gguf" and facts["main"] and (root / facts["main"]).is_file():
        g = _gguf_facts(root / facts["main"])
        facts["architecture"] = g.pop("architecture", None)
        facts["licence"] = g.pop("licence", None) or facts.get("licence")
        facts["extra"].update(g)
        guess = "embeddings" if facts["architecture"] in _EMBEDDING_GGUF_ARCHS else "text-generation"
    elif isinstance(config, dict):
        archs = config.get("architectures") or []
        facts["architecture"] = config.get("model_type") or (archs[0] if archs else None)
        if archs:
            facts["extra"]["architectures"] = archs
        if "modules.json" in names or "sentence_bert_config.json" in names or any(
                r.startswith("1_Pooling/") for r in rels):
            guess = "embeddings"
        for a in archs:
            for head, t in _TASK_BY_HEAD:
                if a.endswith(head):
                    guess = t
                    break
            if guess is None and a.endswith("ForConditionalGeneration"):
                guess = ("transcription" if config.get("model_type") == "whisper" else "text-generation")
            if guess is None and a.endswith("Model"):
                guess = "embeddings"
        if fmt == "ctranslate2" and ("alignment_heads" in config or "suppress_ids" in config):
            facts["architecture"] = facts["architecture"] or "whisper"
            guess = guess or "transcription"
        tok = read_json(root / "tokenizer_config.json") if "tokenizer_config.json" in names else None
        if isinstance(tok, dict) and tok.get("chat_template"):
            facts["extra"]["chat_template"] = True
    if fmt == "onnx":
        voice = next((r for r in rels if r.endswith(".onnx.json")), None)
        vc = read_json(root / voice) if voice else None
        if isinstance(vc, dict) and "phoneme_id_map" in vc:
            facts["architecture"] = facts["architecture"] or "vits"
            facts["extra"]["sample_rate"] = (vc.get("audio") or {}).get("sample_rate")
            guess = guess or "speech"
    facts["task"] = task_name(task) if task else guess
    if not facts["task"]:
        raise BadInput(f"{root}: cannot tell what task this {fmt} model is for; pass --task "
                       f"(one of {', '.join(TASKS)})")
    if facts["task"] == "embeddings" and isinstance(config, dict):
        facts["extra"].update(sentence_facts(root, names))
    return facts


ADAPTER_CONFIG = "adapter_config.json"
SENTENCE_KEYS = ("pooling", "normalize", "max_seq_length")


def sentence_facts(folder: Path, names: set[str] | None = None) -> dict:
    """How a sentence-transformers folder (or a plain encoder folder) makes one vector of a text:
    pooling ("mean", "cls", "max", "mean_sqrt_len" ...; a list when several are on; "mean" when the folder does
    not say), normalize (modules.json lists a Normalize module, or there is no modules.json), max_seq_length
    (sentence_bert_config.json's, else the tokenizer's model_max_length; None when neither says) and dim (the
    pooling's word_embedding_dimension, when given). names: the model's files (default: whatever is there)."""
    def js(rel, default):
        value = read_json(folder / rel) if names is None or rel in names else None
        return value if isinstance(value, type(default)) else default

    pool = js("1_Pooling/config.json", {})
    modes = [re.sub(r"_?tokens?$", "", k[len("pooling_mode_"):]) for k, v in pool.items()
             if k.startswith("pooling_mode_") and v is True]
    modules = js("modules.json", [])
    facts = {"pooling": modes[0] if len(modes) == 1 else (modes or "mean"),
             "normalize": (not modules) or any(isinstance(m, dict) and str(m.get("type", "")).endswith("Normalize")
                                               for m in modules),
             "max_seq_length": (js("sentence_bert_config.json", {}).get("max_seq_length")
                                or js("tokenizer_config.json", {}).get("model_max_length"))}
    if "word_embedding_dimension" in pool:
        facts["dim"] = pool["word_embedding_dimension"]
    return facts


def _format(root: Path, rels: list[str]) -> str:
    suffixes = {Path(r).suffix for r in rels}
    if ".gguf" in suffixes:
        return "gguf"
    if ".safetensors" in suffixes:
        return "safetensors"
    if "model.bin" in rels and "config.json" in rels:
        head = b""
        if (root / "model.bin").is_file():  # (not when it is joined from parts later)
            with open(root / "model.bin", "rb") as f:
                head = f.read(2)
        if head[:2] != b"PK" and head[:1] != b"\x80":  # not a torch zip or pickle
            return "ctranslate2"
    if ".onnx" in suffixes:
        return "onnx"
    if suffixes & {".bin", ".pt", ".pth"}:
        return "pytorch"
    return "other"


_PREFERRED_MAIN = {"safetensors": ("model.safetensors.index.json", "model.safetensors"),
                   "ctranslate2": ("model.bin",), "pytorch": ("pytorch_model.bin", "model.bin")}
_MAIN_SUFFIX = {"gguf": (".gguf",), "safetensors": (".safetensors",), "onnx": (".onnx",),
                "pytorch": (".bin", ".pt", ".pth")}


def main_file(rels: list[str], fmt: str) -> str | None:
    """The main weights file among a model's files (as stored), for its format; None when it cannot tell."""
    rels = [stored_name(r) for r in rels]
    for name in _PREFERRED_MAIN.get(fmt, ()):
        if name in rels:
            return name
    matches = [r for r in rels if r.endswith(_MAIN_SUFFIX.get(fmt, ()))] if fmt in _MAIN_SUFFIX else []
    return matches[0] if matches else (rels[0] if len(rels) == 1 else None)


def walk(folder: Path, skip_code: bool = True) -> list[str]:
    """The files of a folder as sorted relative posix paths, skipping hidden entries (and Python code)."""
    rels = []
    for d, dirs, files in os.walk(folder):
        dirs[:] = [x for x in dirs if not x.startswith(".") and x != "__pycache__"]
        for fname in files:
            if fname.startswith(".") or (skip_code and fname.endswith(_CODE_SUFFIXES)):
                continue
            rels.append((Path(d) / fname).relative_to(folder).as_posix())
    return sorted(rels)


def _readme_licence(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace")[:20000]
    except OSError:
        return None
    front = re.match(r"---\s*\n(.*?)\n---", text, re.S)
    lic = re.search(r"^licen[cs]e:\s*['\"]?([^'\"\n]+?)['\"]?\s*$", front.group(1), re.M) if front else None
    return lic.group(1) if lic else None


def _gguf_facts(path: Path) -> dict:
    """A few facts from a GGUF's metadata: architecture, licence, context length, chat template ..."""
    from ..formats.gguf import read_gguf

    g = read_gguf(path)
    meta, tensors = g.metadata, g.tensors
    arch = meta.get("general.architecture")
    out = {"architecture": arch, "licence": meta.get("general.license"), "gguf_name": meta.get("general.name"),
           "file_type": meta.get("general.file_type"), "tensors": len(tensors),
           "context_length": meta.get(f"{arch}.context_length"),
           "chat_template": bool(meta.get("tokenizer.chat_template")),
           "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
           "eos_token_id": meta.get("tokenizer.ggml.eos_token_id")}
    return {k: v for k, v in out.items() if v is not None}
