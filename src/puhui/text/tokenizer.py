"""Subword tokenizers (Hugging Face `tokenizers`), from a GGUF file's metadata or a Hugging Face folder.

A GGUF carries no tokenizer.json: it stores the vocabulary, merges, scores and token types under
llama.cpp's keys. `tokenizer_from_gguf` rebuilds the same `tokenizers.Tokenizer` that transformers builds
from those keys (transformers/integrations/gguf/gguf_tokenizer_mapping.py), for the two kinds:

- "gpt2": byte-level BPE. Tokens are spelt in GPT-2's byte alphabet; the text is split by the regex
  `tokenizer.ggml.pre` names before the merges apply.
- "llama": SentencePiece's BPE. Words start with "▁"; text outside the vocabulary falls back to the
  byte tokens <0x00>..<0xFF>; when the file has no merges they are recovered from the token scores.

    tok = load_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")    # or a folder with tokenizer.json
    ids = tok.encode("Hello"); tok.decode(ids)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as BackendTokenizer

from ..errors import BadInput, Unsupported

# llama.cpp's token types (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> the split regex its merges were learned with; absent: GPT-2's own regex
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx", "pixtral"], _LLAMA3_SPLIT),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "megrez"], _QWEN2_SPLIT),
    **dict.fromkeys(["gpt-4o", "llama4"], _GPT4O_SPLIT),
}


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's map of the 256 bytes to printable characters (space -> "Ġ", newline -> "Ċ" ...)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}


def _byte_level_model(meta: dict) -> tuple[BackendTokenizer, set[str]]:
    spelling = byte_alphabet()
    alphabet = set(spelling.values())
    # a token written with characters outside the byte alphabet is spelt into it
    vocab = {}
    for i, token in enumerate(meta["tokenizer.ggml.tokens"]):
        vocab[token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode("utf-8"))] = i
    merges = [tuple(m.split(" ")) for m in meta.get("tokenizer.ggml.merges", [])]
    tok = BackendTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre in PRE_TOKENIZER_SPLITS:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRE_TOKENIZER_SPLITS[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    elif pre == "smollm":  # llama.cpp: "\p{N}" then GPT-2's regex; as SmolLM's own tokenizer.json
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    else:  # "default", "gpt2" and any other: GPT-2's regex
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok, alphabet


def sentencepiece_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """The BPE merges a SentencePiece vocabulary implies: every split of a token into two tokens,
    best score first (ties: shorter left, then shorter right part first) -- transformers' `generate_merges`."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for token, score in dict(zip(tokens, scores)).items():
        pairs = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in vocab and token[k:] in vocab]
        pairs.sort(key=lambda p: (vocab[p[0]], vocab[p[1]]))
        merges += [(left, right, score) for left, right in pairs]
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _sentencepiece_model(meta: dict) -> tuple[BackendTokenizer, None]:
    tokens = meta["tokenizer.ggml.tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if "tokenizer.ggml.merges" in meta:
        merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    else:
        merges = sentencepiece_merges(tokens, meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens))
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    tok = BackendTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True,
                                      unk_token=tokens[unk_id] if unk_id is not None else None))
    # "▁" before the text's first word (transformers' prepend_scheme "first"; llama.cpp also puts one after
    # each special token). transformers ignores add_space_prefix = false; llama.cpp, and we, honour it.
    prefix = meta.get("tokenizer.ggml.add_space_prefix", True)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first" if prefix else "never",
                                                 split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    return tok, None


def tokenizer_from_gguf(metadata: dict) -> BackendTokenizer:
    """The `tokenizers.Tokenizer` a GGUF's metadata describes (gpt2 byte-level BPE, or llama SentencePiece BPE),
    with its control tokens as special tokens and BOS/EOS added as `tokenizer.ggml.add_bos_token` says."""
    kind = metadata.get("tokenizer.ggml.model")
    if kind == "gpt2":
        tok, alphabet = _byte_level_model(metadata)
    elif kind == "llama":
        tok, alphabet = _sentencepiece_model(metadata)
    else:
        raise Unsupported(f"GGUF tokenizer model {kind!r} is not supported (gpt2 and llama are)")
    tokens = metadata["tokenizer.ggml.tokens"]
    types = metadata.get("tokenizer.ggml.token_type") or []
    # control tokens whole and special; in a byte-level vocabulary one spelt outside the alphabet is a mislabel
    special = [t for t, ty in zip(tokens, types) if ty == CONTROL and (alphabet is None or set(t) <= alphabet)]
    for key in ("unknown", "bos", "eos", "padding"):  # transformers adds these as special tokens too
        token_id = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None and 0 <= token_id < len(tokens) and tokens[token_id] not in special:
            special.append(tokens[token_id])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    vocab = tok.get_vocab(with_added_tokens=False)
    user = [t for t, ty in zip(tokens, types) if ty == USER_DEFINED and t in vocab and t not in special]
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])
    add_bos = metadata.get("tokenizer.ggml.add_bos_token", kind == "llama")
    add_eos = metadata.get("tokenizer.ggml.add_eos_token", False)
    tok.post_processor = _template(tok, _token(metadata, "bos") if add_bos else None,
                                   _token(metadata, "eos") if add_eos else None)
    return tok


def _token(metadata: dict, key: str) -> str | None:
    token_id = metadata.get(f"tokenizer.ggml.{key}_token_id")
    return None if token_id is None else metadata["tokenizer.ggml.tokens"][token_id]


def _template(tok: BackendTokenizer, bos: str | None, eos: str | None) -> processors.TemplateProcessing:
    """BOS before and EOS after each sequence, as transformers' `update_post_processor` writes it."""
    single = f"{bos + ':0 ' if bos else ''}$A:0{' ' + eos + ':0' if eos else ''}"
    pair = f"{single}{' ' + bos + ':1' if bos else ''} $B:1{' ' + eos + ':1' if eos else ''}"
    special = [(t, tok.token_to_id(t)) for t in dict.fromkeys(x for x in (bos, eos) if x)]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


@dataclass
class Tokenizer:
    """A `tokenizers.Tokenizer` and what a generator needs beside it: special ids, BOS/EOS policy, chat template."""

    backend: BackendTokenizer
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    chat_template: str | None = None
    add_bos: bool = False   # whether `encode` puts BOS first (the backend's post-processor does it)

    @classmethod
    def from_gguf(cls, metadata: dict) -> "Tokenizer":
        kind = metadata.get("tokenizer.ggml.model")
        return cls(tokenizer_from_gguf(metadata), _token(metadata, "bos"), _token(metadata, "eos"),
                   _token(metadata, "padding"), metadata.get("tokenizer.chat_template"),
                   bool(metadata.get("tokenizer.ggml.add_bos_token", kind == "llama")))

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Tokenizer":
        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise BadInput(f"{folder}: no tokenizer.json")
        backend = BackendTokenizer.from_file(str(folder / "tokenizer.json"))
        backend.no_padding()  # a tokenizer.json may pad or cut every text (MiniLM's pads to 128); callers decide
        backend.no_truncation()
        config = _read_json(folder / "tokenizer_config.json")
        special = {**_read_json(folder / "special_tokens_map.json"), **config}

        def name(key):
            value = special.get(key)
            return value.get("content") if isinstance(value, dict) else value

        bos = name("bos_token")
        add_bos = bos is not None and backend.encode("a").tokens[:1] == [bos]
        from .chat_template import chat_template_from
        return cls(backend, bos, name("eos_token"), name("pad_token"), chat_template_from(config), add_bos)

    @property
    def bos_id(self) -> int | None:
        return None if self.bos_token is None else self.backend.token_to_id(self.bos_token)

    @property
    def eos_id(self) -> int | None:
        return None if self.eos_token is None else self.backend.token_to_id(self.eos_token)

    @property
    def pad_id(self) -> int | None:
        return None if self.pad_token is None else self.backend.token_to_id(self.pad_token)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> set[int]:
        return {i for i, t in self.backend.get_added_tokens_decoder().items() if t.special}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids of `text`; special tokens written in it (<|im_start|>) become their ids."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    def token_bytes(self) -> list[bytes | None]:
        """The bytes each token id stands for (what it adds to a decoded text), None for special tokens.
        Byte-level BPE vocabularies are spelt in GPT-2's byte alphabet; SentencePiece ones write a space as
        "▁" and a byte as <0xNN>. Computed once per tokenizer."""
        cached = getattr(self, "_token_bytes", None)
        if cached is not None:
            return cached
        added = self.backend.get_added_tokens_decoder()
        byte_level = type(self.backend.decoder).__name__ == "ByteLevel"
        unspell = {c: b for b, c in byte_alphabet().items()}
        out: list[bytes | None] = []
        for i in range(self.vocab_size):
            piece = self.backend.id_to_token(i)
            if piece is None or (i in added and added[i].special):
                out.append(None)
            elif i in added:
                out.append(piece.encode("utf-8"))
            elif byte_level:
                out.append(bytes(unspell[c] for c in piece) if all(c in unspell for c in piece)
                           else piece.encode("utf-8"))
            elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                out.append(bytes([int(piece[3:5], 16)]))
            else:
                out.append(piece.replace("\u2581", " ").encode("utf-8"))
        self._token_bytes = out
        return out

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
        """The chat template applied to `messages` (see chat_template.render_chat)."""
        if not self.chat_template:
            raise BadInput("this model's tokenizer has no chat template")
        from .chat_template import render_chat
        return render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           bos_token=self.bos_token or "", eos_token=self.eos_token or "", **extra)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of a GGUF file or of a Hugging Face folder (tokenizer.json, tokenizer_config.json)."""
    path = Path(path)
    if path.is_dir():
        return Tokenizer.from_folder(path)
    if path.suffix == ".gguf":
        from ..formats.gguf import read_gguf
        return Tokenizer.from_gguf(read_gguf(path).metadata)
    if path.name == "tokenizer.json":
        return Tokenizer.from_folder(path.parent)
    raise BadInput(f"{path}: not a GGUF file nor a folder with tokenizer.json")
