"""The OpenAI API's requests and responses, as pydantic models: they are the schema of /openapi.json.

Requests are strict (a string is not a number) and closed: a field we do not know is refused with a 400
naming it. Fields OpenAI has that we do not implement are declared (`Unsupported`) so that the document
shows them, and refused in openai.py unless they hold a value that asks for nothing ("neutral").
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_N = 128          # OpenAI's limit on n
MAX_LOGPROBS = 20

Unsupported = Optional[Any]
_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_unicode(text: str) -> str:
    """JSON's \\ud800 escapes make strings no tokenizer (nor any UTF-8 answer) can take: refused."""
    if _SURROGATE.search(text):
        raise ValueError("the text holds a lone UTF-16 surrogate (\\ud800-\\udfff escape), which is not Unicode text")
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------------------------- shared

Stop = Union[Text, list[Text], None]


class StreamOptions(Closed):
    include_usage: Optional[bool] = Field(None, description="Add a last chunk with the usage of the whole request.")
    include_obfuscation: Optional[bool] = Field(
        None, description="Not implemented: only false or null is accepted (puhui sends no obfuscation field).")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _Sampling(Closed):
    """The sampling fields completions and chat share (OpenAI's, plus vLLM's top_k, min_p, repetition_penalty)."""

    temperature: Optional[float] = Field(None, ge=0, le=2, description="0 is greedy. Default 1.")
    top_p: Optional[float] = Field(None, gt=0, le=1)
    n: Optional[int] = Field(None, ge=1, le=MAX_N, description="Choices per prompt. Default 1.")
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    stop: Stop = Field(None, description="Up to any number of strings; the text ends before the first one.")
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    seed: Optional[int] = Field(None, ge=-(2**63), le=2**64 - 1)
    logit_bias: Optional[dict[str, float]] = Field(None, description="Token id (as a string) to a bias in [-100, 100].")
    user: Optional[str] = Field(None, description="An end-user id; accepted, not stored.")
    # extensions (vLLM's names)
    top_k: Optional[int] = Field(None, ge=0, description="Extension: keep the k most likely tokens (0: off).")
    min_p: Optional[float] = Field(None, ge=0, le=1, description="Extension: min-p truncation (0: off).")
    repetition_penalty: Optional[float] = Field(None, gt=0, le=10, description="Extension: CTRL penalty (1: off).")
    ignore_eos: Optional[bool] = Field(None, description="Extension: go on past the end-of-sequence token until "
                                                         "max_tokens or a stop string (benchmarks).")


# ---------------------------------------------------------------------------------------------- completions

Prompt = Union[Text, list[Text], list[int], list[list[int]]]


class CompletionRequest(_Sampling):
    model: str = Field(..., description="A model id or alias (see GET /v1/models).", examples=["text-davinci-003"])
    prompt: Prompt = Field(..., description="A string, a list of strings, token ids or a list of token-id lists.")
    max_tokens: Optional[int] = Field(None, ge=1, description="Default 16. Prompt + max_tokens must fit the context.")
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS,
                                    description="Log-probabilities of the chosen and this many likeliest tokens.")
    echo: Optional[bool] = Field(None, description="Put the prompt before the completion (and its logprobs).")
    suffix: Unsupported = Field(None, description="Not implemented: refused unless null.")
    best_of: Unsupported = Field(None, description="Not implemented: refused unless null, 1 or equal to n.")


class LegacyCompletionRequest(CompletionRequest):
    """POST /v1/engines/{engine}/completions: the model comes from the path."""

    model: Optional[str] = Field(None, description="Ignored when equal to the engine in the path; else refused.")


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
        ..., description="'developer' is treated as 'system'; 'tool' and 'function' are refused (no tools yet).")
    content: Union[Text, list[ContentPart], None] = None
    name: Unsupported = Field(None, description="Not implemented: refused unless null.")
    tool_calls: Unsupported = None
    tool_call_id: Unsupported = None
    function_call: Unsupported = None
    refusal: Unsupported = None
    audio: Unsupported = None


class ResponseFormat(Closed):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[dict[str, Any]] = None


class ChatCompletionRequest(_Sampling):
    model: str = Field(..., description="A model id or alias (see GET /v1/models).", examples=["gpt-3.5-turbo"])
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1, description="Deprecated name of max_completion_tokens.")
    max_completion_tokens: Optional[int] = Field(
        None, ge=1, description="Default: what is left of the context window after the prompt.")
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS)
    response_format: Optional[ResponseFormat] = Field(
        None, description="'text', or 'json_object': the answer is one JSON object (constrained decoding; a "
                          "message must mention JSON). 'json_schema' is refused.")
    # OpenAI's, not implemented: refused unless null (or neutral)
    tools: Unsupported = None
    tool_choice: Unsupported = None
    functions: Unsupported = None
    function_call: Unsupported = None
    parallel_tool_calls: Unsupported = None
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

    model: Optional[str] = Field(None, description="Ignored when equal to the engine in the path; else refused.")


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: Optional[list[int]] = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: Optional[list[ChatTokenLogprob]] = None
    refusal: Optional[list[ChatTokenLogprob]] = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None
    refusal: Optional[str] = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: Optional[ChatLogprobs] = None
    finish_reason: Optional[Literal["stop", "length"]] = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: Optional[str] = None
    choices: list[ChatChoice]
    usage: Usage


# ---------------------------------------------------------------------------------------------- embeddings

class EmbeddingRequest(Closed):
    model: str = Field(..., description="A model id or alias (see GET /v1/models).",
                       examples=["text-embedding-ada-002"])
    input: Union[Text, list[Text], list[int], list[list[int]]] = Field(
        ..., description="A string or a list of strings (token ids are refused: send text).")
    encoding_format: Optional[Literal["float", "base64"]] = Field(
        None, description="float (default) or base64 of little-endian float32.")
    dimensions: Optional[int] = Field(None, ge=1, description="Only the model's own dimension is accepted.")
    user: Optional[str] = None


class LegacyEmbeddingRequest(EmbeddingRequest):
    """POST /v1/engines/{engine}/embeddings: the model comes from the path."""

    model: Optional[str] = Field(None, description="Ignored when equal to the engine in the path; else refused.")


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
    status: Literal["ok"] = "ok"
    models: list[str]
