"""Text task objects: `TextGenerator` (text-generation models) and `Embedder` (sentence embeddings).

    gen = puhui.load("smollm2-135m-instruct")
    gen.generate("Once upon a time", max_tokens=32, temperature=0).text
    gen.chat("What is the capital of France?", temperature=0).text
    for delta in gen.stream([{"role": "user", "content": "Hi"}]): print(delta, end="")

    emb = puhui.load("all-minilm-l6-v2")
    emb.embed(["a sentence", "another"])          # np.ndarray float32 [2, 384]

Sampling keywords are SamplingParams' fields (max_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
presence_penalty, frequency_penalty, logit_bias, stop, stop_token_ids, seed, n, logprobs, echo, ignore_eos,
json_mode), and what the output must be: json_schema= (a dict), regex=, grammar= (Lark, or llama.cpp's GBNF):

    gen.chat("Ann is 31. Her name and age?", json_schema={"type": "object", "properties": {"name": {"type":
             "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}).text
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.llm_engine import CACHE_STEP, LLMEngine
from ..engine.constraints import Structure
from ..engine.sampling import SamplingParams
from ..engine.sequence import Request, RequestOutput, TokenLogprob, Usage
from ..errors import BadInput, TooLong, Unsupported

DEFAULT_MAX_TOKENS = 256
STRUCTURE_OPTIONS = ("json_schema", "regex", "grammar")   # keywords that set what the output must be
_SAMPLING_FIELDS = {f.name for f in fields(SamplingParams)}


@dataclass
class Choice:
    index: int
    text: str
    tokens: list[int]
    finish_reason: str | None
    logprobs: list[TokenLogprob | None] | None = None
    tool_calls: list[dict] | None = None      # with tools: OpenAI's tool_calls (finish_reason "tool_calls")


@dataclass
class GenerationResult:
    """One prompt's result. text / tokens / finish_reason / logprobs are those of the first choice;
    `choices` has all n."""

    text: str
    tokens: list[int]
    finish_reason: str | None
    usage: Usage
    choices: list[Choice]
    logprobs: list[TokenLogprob | None] | None = None
    prompt_tokens: list[int] | None = None
    tool_calls: list[dict] | None = None

    @classmethod
    def from_output(cls, out: RequestOutput) -> "GenerationResult":
        choices = [Choice(c.index, c.text, c.token_ids, c.finish_reason, c.logprobs) for c in out.outputs]
        first = choices[0]
        return cls(first.text, first.tokens, first.finish_reason, out.usage, choices, first.logprobs,
                   out.prompt_token_ids)

    def __str__(self) -> str:
        return self.text


class TextGenerator:
    """A text-generation model from the store, generating through its one LLMEngine.

    The engine's KV cache is sized to the work, not to the whole context window at once: it starts with one
    slot of CACHE_STEP positions and grows in place (up to `max_batch` sequences of `context_length` tokens)
    when a call needs more; a stream still open keeps its place. `prepare` is the one way from a prompt or
    messages and sampling options to an engine request: the Python API, the CLI and the server all call it.
    A server's worker owns the engine's steps (serve/worker.py); without a server, the calls here step it."""

    task = "text-generation"

    def __init__(self, manifest, dtype=None, device=None, max_batch: int = 8, context_length: int | None = None,
                 quant: str | None = None, context_cap: int | None = None):
        from ..models.loader import load_causal_lm

        self.manifest = manifest
        self.name = getattr(manifest, "name", str(manifest))
        self.default_adapter: str | None = None    # the adapter a request runs with when it names none
        self.loaded = load_causal_lm(manifest, dtype=dtype, device=device, quant=quant)
        self.model = self.loaded.model
        self.tokenizer = self.loaded.tokenizer
        self.chat_template = self.loaded.chat_template
        limit = self.loaded.context_length
        if context_length is not None and not 1 <= context_length <= limit:
            raise BadInput(f"context_length {context_length} is outside the model's 1..{limit} tokens",
                           param="context_length")
        if context_length is None and context_cap is not None:
            context_length = min(limit, context_cap)   # the model's window, at most the cap (KV cache memory)
        self.context_length = context_length or limit
        if max_batch < 1:
            raise BadInput(f"max_batch must be >= 1, got {max_batch}", param="max_batch")
        self.max_batch = max_batch
        self.engine = LLMEngine(self.model, self.tokenizer, max_batch=max_batch, context_length=self.context_length,
                                eos_ids=self.loaded.eos_ids, slots=1, positions=CACHE_STEP)
        self.sampling_defaults = sampling_defaults(manifest, self.name)
        self._ids = itertools.count()

    def __repr__(self) -> str:
        return f"TextGenerator({self.name!r}, context_length={self.context_length})"

    @property
    def capabilities(self) -> list[str]:
        """What this model answers (GET /v1/models lists it): completions, chat and tool calls with a template,
        structured outputs (JSON mode, JSON schemas, regular expressions, grammars)."""
        chat = ["chat", "tools"] if self.chat_template else []
        return ["completions", *chat, "json_object", "json_schema", "regex", "grammar", "logprobs"]

    # ------------------------------------------------------------------------------------------ prompts

    def params(self, prompt_tokens: int = 0, chat: bool = False, default_max_tokens: int | None = DEFAULT_MAX_TOKENS,
               **sampling) -> SamplingParams:
        """SamplingParams from keywords (None: left out). What is left out comes from the model's own defaults
        (`sampling_defaults`), then SamplingParams'. Without max_tokens: default_max_tokens (256), or what is
        left of the context if less (None: all that is left). For chat, the template's end-of-turn tokens stop
        too."""
        sampling = {k: v for k, v in sampling.items() if v is not None}
        _known_options(sampling)
        for k, v in self.sampling_defaults.items():
            sampling.setdefault(k, v)
        _structure_options(sampling)
        if sampling.get("max_tokens") is None:
            room = self.context_length - prompt_tokens
            if default_max_tokens is None:
                sampling["max_tokens"] = max(1, room)
            else:
                sampling["max_tokens"] = min(default_max_tokens, room) if room >= 1 else default_max_tokens
        if chat:
            turn = self.loaded.end_of_turn_ids - self.loaded.eos_ids
            if turn and not sampling.get("ignore_eos"):
                sampling["stop_token_ids"] = tuple(sampling.get("stop_token_ids") or ()) + tuple(sorted(turn))
        return SamplingParams(**sampling)

    def render(self, messages) -> str:
        """The prompt the chat template makes of messages (a string is one user message)."""
        if not self.chat_template:
            raise Unsupported(f"model {self.name!r} has no chat template; use generate() with a plain prompt",
                              param="messages")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.tokenizer.render_chat(list(messages), add_generation_prompt=True)

    def prepare(self, prompt, *, chat: bool | None = None, request_id: str | None = None,
                default_max_tokens: int | None = DEFAULT_MAX_TOKENS, tools=None, tool_choice=None,
                parallel_tool_calls: bool | None = None, adapter: str | None = None, **sampling) -> Request:
        """An engine request, checked (sampling options, vocabulary, context window) but not queued: of a text
        or token-id prompt, or, when `chat` (default: when `prompt` is a list of message dicts), of messages
        through the chat template (a string is then one user message). Errors name their parameter: a
        template that cannot take the messages is about "messages". `default_max_tokens`: see params().
        tools / tool_choice / parallel_tool_calls: OpenAI's, for chat (text/tools.py: the calls are
        constrained to the tools' schemas; `tool_calls(text)` reads them back). adapter: the name of a LoRA
        adapter added with add_adapter, that this request runs with (in the same batches as the base's)."""
        chat = _is_messages(prompt) if chat is None else chat
        if tools is not None and not chat:
            raise BadInput("tools are for chat (messages through the chat template)", param="tools")
        if chat:
            try:
                text = self._render(prompt, tools, tool_choice, parallel_tool_calls, sampling)
            except BadInput as e:
                e.param = e.param or "messages"
                raise
            ids = self.tokenizer.encode(text, add_special_tokens=False)
        elif isinstance(prompt, str):
            text, ids = prompt, self.tokenizer.encode(prompt)
        else:
            text, ids = None, [int(t) for t in prompt]
        params = self.params(len(ids), chat=chat, default_max_tokens=default_max_tokens, **sampling)
        req = self.engine.make_request(ids, params, request_id=request_id or f"gen-{next(self._ids)}",
                                       adapter=adapter if adapter is not None else self.default_adapter)
        req.prompt = text
        return req

    # ------------------------------------------------------------------------------------------ adapters

    def add_adapter(self, name: str, folder) -> None:
        """Serve a LoRA adapter (a PEFT folder: adapter_config.json + adapter_model.safetensors) on this model,
        by name: requests that name it (prepare's `adapter`) run in the same batches as the base's."""
        from ..engine.adapters import read_adapter

        self.engine.add_adapter(read_adapter(folder, name))

    def use_adapter(self, name: str, folder) -> None:
        """Be the adapter `name` (a store adapter loaded with puhui.load): it is served and every request that
        names no other adapter runs with it."""
        self.add_adapter(name, folder)
        self.default_adapter = self.name = name

    def remove_adapter(self, name: str) -> None:
        self.engine.remove_adapter(name)

    @property
    def adapters(self) -> list[str]:
        """The names of the adapters served on this model."""
        return self.engine.adapter_names()

    def _render(self, messages, tools, tool_choice, parallel, sampling: dict) -> str:
        """The chat prompt of messages, with the tools offered (and the structure of their calls put into
        `sampling`) when there are tools; a history with tool calls and results in any case."""
        from ..text import tools as tool_format

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        messages = list(messages)
        history = any(m.get("role") == "tool" or m.get("tool_calls") for m in messages if isinstance(m, dict))
        if tools is None and not history:
            return self.render(messages)
        if not self.chat_template:
            raise Unsupported(f"model {self.name!r} has no chat template; use generate() with a plain prompt",
                              param="messages")
        functions, choice, parallel = tool_format.check_tools(tools, tool_choice, parallel) if tools is not None \
            else ([], "none", False)
        own = "tools" in self.chat_template
        msgs, extra = tool_format.render_messages(messages, functions, own, offer=choice != "none")
        if choice != "none":
            if sampling.get("json_mode") or any(sampling.get(k) is not None for k in STRUCTURE_OPTIONS):
                raise BadInput("tools and a response format: the answer is either tool calls or the format",
                               param="tools")
            from ..engine.constraints import JSON_OPTIONS
            sampling["structure"] = Structure("lark", tool_format.grammar(functions, choice, parallel, JSON_OPTIONS))
        return self.tokenizer.render_chat(msgs, add_generation_prompt=True, **extra)

    @staticmethod
    def tool_calls(text: str) -> list[dict] | None:
        """OpenAI's tool_calls of an answer to a request with tools (None: the answer is text)."""
        from ..text.tools import parse

        return parse(text)

    # ------------------------------------------------------------------------------------------ doors

    def generate(self, prompt, **sampling):
        """Complete a prompt (text or token ids), or a list of prompts (batched): a GenerationResult, or a list."""
        single = isinstance(prompt, str) or (isinstance(prompt, (list, tuple)) and prompt
                                             and isinstance(prompt[0], int))
        prompts = [prompt] if single else list(prompt)
        if not prompts:
            raise BadInput("no prompts", param="prompt")
        results = self._run([self.prepare(p, chat=False, **sampling) for p in prompts])
        return results[0] if single else results

    def chat(self, messages, **sampling) -> GenerationResult:
        """Answer a conversation ([{"role": ..., "content": ...}], or a string as one user message) with the
        model's chat template; the answer ends at the template's end-of-turn token. With tools=[...] (OpenAI's
        tools, tool_choice, parallel_tool_calls), a choice that calls tools has tool_calls and finish_reason
        "tool_calls"."""
        offered = sampling.get("tools") is not None and sampling.get("tool_choice") != "none"
        result = self._run([self.prepare(messages, chat=True, **sampling)])[0]
        if offered:
            for c in result.choices:
                c.tool_calls = self.tool_calls(c.text)
                if c.tool_calls:
                    c.finish_reason = "tool_calls"
            result.tool_calls, result.finish_reason = result.choices[0].tool_calls, result.choices[0].finish_reason
        return result

    def stream(self, prompt_or_messages, **sampling) -> Iterator[str]:
        """Text deltas as they are generated (never a split character). A string is a plain prompt; a list of
        message dicts goes through the chat template. Checked before the first delta is asked for."""
        req = self.prepare(prompt_or_messages, **sampling)
        if req.params.n != 1:
            raise BadInput("stream() streams one sequence: n must be 1", param="n")
        return self._deltas(req)

    def _deltas(self, req) -> Iterator[str]:
        (rid,) = self.enqueue([req])
        for out in self.engine.outputs([rid]):
            if out.outputs[0].delta:
                yield out.outputs[0].delta

    def _run(self, reqs) -> list[GenerationResult]:
        rids = self.enqueue(reqs)
        final = {out.request_id: out for out in self.engine.outputs(rids) if out.finished}
        return [GenerationResult.from_output(final[rid]) for rid in rids]

    def enqueue(self, reqs) -> list[str]:
        """Queue prepared requests in the engine, its cache grown (in place) to run them all at once; their
        outputs come from `engine.outputs(ids)`. (A served generator's requests go through the server's worker.)"""
        self.engine.reserve(sum(r.params.n for r in reqs), max(len(r.prompt_ids) + r.params.max_tokens for r in reqs))
        return [self.engine.enqueue(r) for r in reqs]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))


SAMPLING_DEFAULTS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def sampling_defaults(manifest, name: str) -> dict:
    """The model's own sampling defaults, for requests that leave them out (as vLLM does): its
    generation_config.json (a Hugging Face checkpoint), then those its manifest records (a packaged model's
    card: extra["sampling"]), then `[sampling.NAME]` in config.toml. Checked here: a bad value is a BadInput
    naming where it came from."""
    from ..settings import get_settings
    from ..store.manifest import read_json

    folder = Path(manifest) if isinstance(manifest, (str, Path)) else getattr(manifest, "folder", None)
    out = {}
    if folder is not None:
        config = read_json(Path(folder) / "generation_config.json", {})
        out.update({k: v for k, v in (config if isinstance(config, dict) else {}).items() if k in SAMPLING_DEFAULTS})
    extra = getattr(manifest, "extra", None) or {}
    for source, values in (("the manifest's extra.sampling", extra.get("sampling")),
                           (f"config.toml [sampling.{name}]", get_settings().sampling.get(name))):
        if not values:
            continue
        unknown = sorted(set(values) - set(SAMPLING_DEFAULTS))
        if unknown:
            raise BadInput(f"{source}: {unknown[0]!r} is not a sampling default (use {', '.join(SAMPLING_DEFAULTS)})")
        out.update(values)
    try:
        SamplingParams(**out)
    except BadInput as e:
        raise BadInput(f"the sampling defaults of {name!r} ({out}): {e}", param=e.param) from None
    return out


def check_sampling(**sampling) -> None:
    """BadInput, naming the option, for sampling options that no model could take (checked before loading one);
    None means left out."""
    sampling = dict(sampling)
    _known_options(sampling)
    _structure_options(sampling)
    SamplingParams(**{k: v for k, v in sampling.items() if v is not None})


def _structure_options(sampling: dict) -> None:
    """json_schema= (a dict or its JSON text), regex= or grammar= (Lark, or GBNF when it has '::=') become
    the request's structure (engine/constraints.py)."""
    given = [k for k in STRUCTURE_OPTIONS if sampling.get(k) is not None]
    for k in STRUCTURE_OPTIONS:
        if sampling.get(k) is None:
            sampling.pop(k, None)
    if not given:
        return
    if len(given) > 1 or sampling.get("json_mode") or sampling.get("structure") is not None:
        raise BadInput(f"{given[-1]}: ask for one structure of the output (json_mode, json_schema, regex or "
                       f"grammar)", param=given[-1])
    name = given[0]
    value = sampling.pop(name)
    if name == "json_schema":
        sampling["structure"] = Structure.json_schema(value)
    elif not isinstance(value, str) or not value:
        raise BadInput(f"{name} must be a non-empty string", param=name)
    elif name == "regex":
        sampling["structure"] = Structure("regex", value)
    else:
        sampling["structure"] = Structure("gbnf" if "::=" in value else "lark", value)


def _known_options(sampling: dict) -> None:
    unknown = sorted(set(sampling) - _SAMPLING_FIELDS - set(STRUCTURE_OPTIONS))
    if unknown:
        raise BadInput(f"unknown sampling option {unknown[0]!r} (known: {', '.join(sorted(_SAMPLING_FIELDS))})",
                       param=unknown[0])


def _is_messages(x) -> bool:
    return isinstance(x, (list, tuple)) and bool(x) and isinstance(x[0], dict)


class Embedder:
    """A sentence-embedding model: texts -> L2-normalised float32 vectors (as its sentence-transformers
    config says: pooling, normalisation, max length; longer texts are truncated to max_length tokens)."""

    task = "embeddings"

    def __init__(self, manifest, dtype=None, device=None, batch_size: int = 32):
        from ..models.loader import load_sentence_encoder

        self.manifest = manifest
        self.name = getattr(manifest, "name", str(manifest))
        self.encoder = load_sentence_encoder(manifest, dtype=dtype, device=device)
        self.model = self.encoder.model
        self.tokenizer = self.encoder.tokenizer
        self.batch_size = batch_size
        self.device = next(self.model.parameters()).device

    capabilities = ("embeddings",)

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, dim={self.dim})"

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    def tokenize(self, texts, truncate: bool = True) -> list[list[int]]:
        """Token ids of each text as embedded: cut to max_length tokens, or, with truncate=False, TooLong for a
        text beyond it (naming which)."""
        texts = _texts(texts)
        encodings = self.tokenizer.backend.encode_batch(texts)
        if not truncate:
            for i, e in enumerate(encodings):
                if e.overflowing:
                    raise TooLong(f"input[{i}] is longer than {self.name}'s limit of {self.max_length} tokens; "
                                  "shorten it or split it (it is not cut silently)", param="input")
        return [e.ids for e in encodings]

    def count_tokens(self, texts) -> list[int]:
        """Tokens of each text as embedded (after truncation)."""
        return [len(ids) for ids in self.tokenize(texts)]

    def embed(self, texts, normalize: bool | None = None) -> np.ndarray:
        """float32 [n, dim] for a list of n texts (a single string gives [1, dim])."""
        return self.encode(texts, normalize).vectors

    @torch.inference_mode()
    def encode(self, texts, normalize: bool | None = None, truncate: bool = True) -> Embeddings:
        """The vectors and the tokens each text took, tokenized once (see tokenize for `truncate`)."""
        encoded = self.tokenize(texts, truncate)
        normalize = self.encoder.normalize if normalize is None else normalize
        out = np.zeros((len(encoded), self.dim), dtype=np.float32)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))   # similar lengths pad little
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            T = max(len(encoded[i]) for i in idx)
            ids = torch.zeros(len(idx), T, dtype=torch.long)
            mask = torch.zeros(len(idx), T, dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, :len(encoded[i])] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            h = self.model(ids, mask).float()
            pooled = _pool(h, mask, self.encoder.pooling)
            if normalize:
                pooled = F.normalize(pooled, p=2, dim=-1)
            out[idx] = pooled.cpu().numpy()
        return Embeddings(out, [len(ids) for ids in encoded])


@dataclass
class Embeddings:
    vectors: np.ndarray     # float32 [n, dim]
    tokens: list[int]       # tokens each text took


def _texts(texts) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise BadInput("no texts to embed", param="input")
    for t in texts:
        if not isinstance(t, str):
            raise BadInput(f"embed takes strings, got {type(t).__name__}", param="input")
    return texts


def _pool(h: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    m = mask[..., None].to(h.dtype)
    if mode == "cls":
        return h[:, 0]
    if mode == "max":
        return h.masked_fill(m == 0, float("-inf")).amax(1)
    total = (h * m).sum(1)
    n = m.sum(1).clamp(min=1e-9)
    return total / (n.sqrt() if mode == "mean_sqrt_len" else n)
