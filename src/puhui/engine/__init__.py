"""Text generation: sampling, stop strings and streaming detokenisation (the scheduler comes later)."""
from .detok import IncrementalDecoder
from .sampling import Sampled, SamplingParams, TokenCounts, make_generator, sample, token_logprobs, truncate
from .stops import StopChecker

__all__ = [
    "IncrementalDecoder", "Sampled", "SamplingParams", "StopChecker", "TokenCounts",
    "make_generator", "sample", "token_logprobs", "truncate",
]
