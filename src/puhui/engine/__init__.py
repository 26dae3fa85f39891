"""Text generation: the continuous-batching engine (llm_engine, scheduler, runner, sequence), sampling,
stop strings and streaming detokenisation."""
from .detok import IncrementalDecoder
from .llm_engine import LLMEngine
from .sampling import Sampled, SamplingParams, TokenCounts, make_generator, sample, token_logprobs, truncate
from .stops import StopChecker

__all__ = [
    "IncrementalDecoder", "LLMEngine", "Sampled", "SamplingParams", "StopChecker", "TokenCounts",
    "make_generator", "sample", "token_logprobs", "truncate",
]
