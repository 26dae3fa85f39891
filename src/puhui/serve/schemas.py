"""The OpenAI API's requests and responses, as pydantic models: they are the schema of /openapi.json.

Requests are strict (a string is not a number) and closed: a field we do not know is refused with a 400
naming it. Fields OpenAI has that we do not implement are declared (`Unsupported`) so that the document
shows them, and refused in openai.py unless they hold a value that asks for nothing ("neutral").
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

MAX_N = 128          # OpenAI's limit on n
MAX_LOGPROBS = 20
MAX_EMBEDDING_INPUTS = 2048     # OpenAI's limit on inputs per embeddings request

Unsupported = Optional[Any]
_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_unicode(text: str) -> str:
    """JSON's \\ud800 escapes make strings no tokenizer (nor any UTF-8 answer) can take: refused."""
    if _SURROGATE.search(text):
        raise ValueError("the text holds a lone UTF-16 surrogate (\\ud800-\\udfff escape), which is not Unicode text")
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]


def _integral(value):
    """JSON Schema's integer includes 2.0 (JSON does not tell 2 from 2.0; Python's parser does): taken as 2.
    1.5 stays a number, which an integer field refuses (strict)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
OptionalInteger = Annotated[Optional[int], BeforeValidator(_integral)]   # (so that Field's bounds reach the document)
# a string the routes refuse when empty, with a message naming it: the document states the bound (minLength),
# the route enforces it (a pydantic bound inside a union would answer with every alternative's complaint)
NonEmptyText = Annotated[Text, Field(json_schema_extra={"minLength": 1})]
_LEGACY_MODEL = ("Optional: the engine in the path names the model. A model here must be the same name as the "
                 "engine, else a 400 (OpenAPI cannot tie a body field to a path parameter).")


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ClosedRequest(Closed):
    """A request body: closed, and its numbers finite. JSON has no NaN nor Infinity, but Python's parser reads
    them; they are refused by name ("is not a finite number"), never compared with a bound."""

    model_config = ConfigDict(allow_inf_nan=False)


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------------------------- shared

Stop = Union[NonEmptyText, list[NonEmptyText], None]


class StreamOptions(Closed):
    include_usage: Optional[bool] = Field(None, description="Add a last chunk with the usage of the whole request.")
    include_obfuscation: Optional[bool] = Field(
        None, description="Not implemented: only false or null is accepted (puhui sends no obfuscation field).")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _Sampling(ClosedRequest):
    """The sampling fields completions and chat share (OpenAI's, plus vLLM's top_k, min_p, repetition_penalty)."""

    temperature: Optional[float] = Field(None, ge=0, le=2, description="0 is greedy. Default 1.")
    top_p: Optional[float] = Field(None, gt=0, le=1)
    n: OptionalInteger = Field(None, ge=1, le=MAX_N, description="Choices per prompt. Default 1.")
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    stop: Stop = Field(None, description="Up to any number of strings; the text ends before the first one.")
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    seed: OptionalInteger = Field(None, ge=-(2**63), le=2**64 - 1)
    logit_bias: Optional[dict[str, float]] = Field(None, description="Token id (as a string) to a bias in [-100, 100].")
    user: Optional[str] = Field(None, description="An end-user id; accepted, not stored.")
    # extensions (vLLM's names)
    top_k: OptionalInteger = Field(None, ge=0, description="Extension: keep the k most likely tokens (0: off).")
    min_p: Optional[float] = Field(None, ge=0, le=1, description="Extension: min-p truncation (0: off).")
    repetition_penalty: Optional[float] = Field(None, gt=0, le=10, description="Extension: CTRL penalty (1: off).")
    ignore_eos: Optional[bool] = Field(None, description="Extension: go on past the end-of-sequence token until "
                                                         "max_tokens or a stop string (benchmarks).")


# ---------------------------------------------------------------------------------------------- completions

_NonEmpty = Field(json_schema_extra={"minItems": 1})
Prompt = Union[Text, Annotated[list[Text], _NonEmpty], Annotated[list[Integer], _NonEmpty],
               Annotated[list[Annotated[list[Integer], _NonEmpty]], _NonEmpty]]


class CompletionRequest(_Sampling):
    model: str = Field(..., description="A model id or alias (see GET /v1/models).", examples=["text-davinci-003"])
    prompt: Prompt = Field(..., description="A string, a list of strings, token ids or a list of token-id lists.")
    max_tokens: OptionalInteger = Field(None, ge=1, description="Default 16. Prompt + max_tokens must fit the context.")
    logprobs: OptionalInteger = Field(None, ge=0, le=MAX_LOGPROBS,
                                    description="Log-probabilities of the chosen and this many likeliest tokens.")
    echo: Optional[bool] = Field(None, description="Put the prompt before the completion (and its logprobs).")
    suffix: Unsupported = Field(None, description="Not implemented: refused unless null.")
    best_of: Unsupported = Field(None, description="Not implemented: refused unless null, 1 or equal to n.")
    raw: Optional[bool] = Field(None, description="Extension: true completes the prompt as it is. By default a model "
                                                  "with a chat template gets a text prompt as one user message (as "
                                                  "text-davinci-003 followed instructions); token-id prompts and "
                                                  "echo are always completed as sent.")
    regex: Optional[str] = Field(None, description="Extension: the completion is a full match of this regular "
                                                   "expression (constrained decoding).")
    grammar: Optional[str] = Field(None, description="Extension: the completion is a sentence of this grammar, in "
                                                     "Lark or llama.cpp's GBNF (constrained decoding).")


class LegacyCompletionRequest(CompletionRequest):
    """POST /v1/engines/{engine}/completions: the model comes from the path."""

    model: Optional[str] = Field(None, description=_LEGACY_MODEL)


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[Optional[float]]
    top_logprobs: list[Optional[dict[str, float]]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: Optional[CompletionLogprobs] = None
    finish_reason: Optional[Literal["stop", "length"]] = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: Optional[str] = None
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None


# ---------------------------------------------------------------------------------------------- chat

class ContentPart(Open):
    type: str = Field(..., description="Only 'text' is accepted: these models read text.")
    text: Optional[Text] = None


class ChatMessage(Closed):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"] = Field(
        ..., description="'developer' is treated as 'system'; 'tool' (and the legacy 'function') carry a tool's "
                         "result.")
    content: Union[Text, list[ContentPart], None] = None
    name: Unsupported = Field(None, description="Only for role 'function' (the function's name); else refused.")
    tool_calls: Unsupported = Field(None, description="An assistant's calls: [{id, type: 'function', function: "
                                                      "{name, arguments}}].")
    tool_call_id: Unsupported = Field(None, description="A tool message: the id of the call it answers.")
    function_call: Unsupported = Field(None, description="Legacy: an assistant's one call {name, arguments}.")
    refusal: Unsupported = None
    audio: Unsupported = None


class ResponseFormat(Closed):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[dict[str, Any]] = None


class ChatCompletionRequest(_Sampling):
    model: str = Field(..., description="A model id or alias (see GET /v1/models).", examples=["gpt-3.5-turbo"])
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: OptionalInteger = Field(None, ge=1, description="Deprecated name of max_completion_tokens.")
    max_completion_tokens: OptionalInteger = Field(
        None, ge=1, description="Default: what is left of the context window after the prompt.")
    logprobs: Optional[bool] = None
    top_logprobs: OptionalInteger = Field(None, ge=0, le=MAX_LOGPROBS)
    response_format: Optional[ResponseFormat] = Field(
        None, description="'text'; 'json_object': the answer is one JSON object (constrained decoding; a message "
                          "must mention JSON); 'json_schema' with json_schema {name, schema, strict}: the answer is "
                          "a document of the schema (constrained decoding by llguidance; a schema it cannot "
                          "compile is a 400 naming the keyword).")
    # OpenAI's, not implemented: refused unless null (or neutral)
    tools: Unsupported = Field(None, description="Functions the model may call: [{type: 'function', function: "
                                                 "{name, description, parameters}}]; the calls are constrained to "
                                                 "the parameters' JSON schema.")
    tool_choice: Unsupported = Field(None, description="'auto' (default), 'none', 'required' or {type: 'function', "
                                                       "function: {name}}.")
    functions: Unsupported = Field(None, description="Legacy form of tools.")
    function_call: Unsupported = Field(None, description="Legacy form of tool_choice.")
    parallel_tool_calls: Optional[bool] = Field(None, description="Default true: one call or more in an answer.")
    audio: Unsupported = None
    modalities: Unsupported = None
    prediction: Unsupported = None
    reasoning_effort: Unsupported = None
    verbosity: Unsupported = None
    web_search_options: Unsupported = None
    service_tier: Unsupported = None
    store: Unsupported = None
    metadata: Unsupported = None
    moderation: Unsupported = None
    prompt_cache_key: Unsupported = None
    prompt_cache_options: Unsupported = None
    prompt_cache_retention: Unsupported = None
    safety_identifier: Optional[str] = Field(None, description="An end-user id; accepted, not stored.")


class LegacyChatCompletionRequest(ChatCompletionRequest):
    """POST /v1/engines/{engine}/chat/completions: the model comes from the path."""

    model: Optional[str] = Field(None, description=_LEGACY_MODEL)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: Optional[list[int]] = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: Optional[list[ChatTokenLogprob]] = None
    refusal: Optional[list[ChatTokenLogprob]] = None


class ToolCallFunction(BaseModel):
    name: str
    arguments: str = Field(..., description="JSON text of the arguments, a document of the tool's schema.")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None
    refusal: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    function_call: Optional[ToolCallFunction] = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: Optional[ChatLogprobs] = None
    finish_reason: Optional[Literal["stop", "length", "tool_calls", "function_call"]] = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: Optional[str] = None
    choices: list[ChatChoice]
    usage: Usage


# ---------------------------------------------------------------------------------------------- embeddings

class EmbeddingRequest(ClosedRequest):
    model: str = Field(..., description="A model id or alias (see GET /v1/models).",
                       examples=["text-embedding-ada-002"])
    # token ids pass validation so that the route refuses them by name; the document shows only what is accepted
    input: Annotated[Union[Text, list[Text], list[int], list[list[int]]], WithJsonSchema({"anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
         "maxItems": MAX_EMBEDDING_INPUTS}]})] = Field(
        ..., description=f"A string or a list of up to {MAX_EMBEDDING_INPUTS} strings, none empty (as OpenAI, an "
                         f"empty string is refused). Token ids are refused: send the text (each model has its own "
                         f"tokenizer). A text beyond the model's limit of tokens is refused (400, code "
                         f"context_length_exceeded), never cut.")
    encoding_format: Optional[Literal["float", "base64"]] = Field(
        None, description="float (default) or base64 of little-endian float32.")
    dimensions: OptionalInteger = Field(
        None, ge=1, description="Must be the model's own dimension, its `dimensions` in GET /v1/models (384 for "
                                "all-minilm-l6-v2), or null: these models were not trained to shorten their "
                                "vectors (OpenAI's text-embedding-3 were), so another value is a 400 naming the "
                                "dimension, never a cut vector. A static schema cannot state a bound that "
                                "depends on the model.")
    user: Optional[str] = None


class LegacyEmbeddingRequest(EmbeddingRequest):
    """POST /v1/engines/{engine}/embeddings: the model comes from the path."""

    model: Optional[str] = Field(None, description=_LEGACY_MODEL)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# ---------------------------------------------------------------------------------------------- models

class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "puhui"
    task: str = Field(..., description="text-generation, embeddings, recommendation, transcription or speech.")
    aliases: list[str] = Field(default_factory=list, description="Names that resolve to this model.")
    context_length: Optional[int] = None
    dimensions: Optional[int] = Field(None, description="An embeddings model: the length of its vectors (the one "
                                                        "value of /v1/embeddings' dimensions it accepts).")
    capabilities: list[str] = Field(default_factory=list, description="What it answers: completions, chat, "
                                    "json_object, json_schema, regex, grammar (structured outputs), embeddings ...")
    parent: Optional[str] = Field(None, description="A LoRA adapter: the base model it runs on (in the same "
                                                    "batches as the base's own requests).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "shutting_down"] = Field("ok", description="ok; shutting_down (a 503) while the server "
                                                                      "drains")
    models: Optional[list[str]] = Field(None, description="The models served: absent when the server has API keys "
                                                          "and the request has no valid one")
