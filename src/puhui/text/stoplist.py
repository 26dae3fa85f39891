"""Stop words shipped as package data (text/stopwords/<lang>.txt, one word a line, '#' comments)."""
from __future__ import annotations

import unicodedata
from functools import lru_cache
from importlib import resources

from ..errors import BadInput
from .chars import PER_CHARACTER, script_of
from .codes import base_language


def _folder():
    return resources.files("puhui.text").joinpath("stopwords")


@lru_cache(maxsize=None)
def stop_word_languages() -> tuple[str, ...]:
    """The language codes with a shipped stop-word list, e.g. ('en', 'zh')."""
    return tuple(sorted(p.name[:-4] for p in _folder().iterdir() if p.name.endswith(".txt")))


@lru_cache(maxsize=None)
def stop_words(lang: str) -> frozenset[str]:
    """The stop words of `lang` ('en', 'zh', or a tag such as 'zh-CN'), NFKC-normalised and case-folded
    so that they compare equal to the tokens of `tokenize`."""
    code = base_language(lang)
    if code not in stop_word_languages():
        raise BadInput(f"no stop-word list for language {lang!r}; available: {', '.join(stop_word_languages())}")
    lines = _folder().joinpath(f"{code}.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(unicodedata.normalize("NFKC", line.strip()).casefold()
                     for line in lines if line.strip() and not line.lstrip().startswith("#"))


@lru_cache(maxsize=None)
def _longest(lang: str) -> int:
    return max((len(w) for w in stop_words(lang)), default=1)


def _is_character_token(token: str) -> bool:
    return len(token) == 1 and script_of(token) in PER_CHARACTER


def drop_stop_words(tokens: list[str], lang: str) -> list[str]:
    """`tokens` without the stop words of `lang`.

    A token that is a stop word goes: Chinese segmented by jieba arrives as words (我们, 没有, 因为, 的)
    and is matched word for word, a single-character word by the single-character entries. Han text
    tokenised one character a token (no Chinese `lang`, or bigrams) is matched too: a run of
    single-character tokens is matched greedily, longest first, against the multi-character stop
    words, so 我 们 goes as 我们, while a character such as 们 alone is kept unless it is itself listed.
    """
    words = stop_words(lang)
    longest = _longest(lang)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        end = i
        while end < len(tokens) and end - i < longest and _is_character_token(tokens[end]):
            end += 1
        for stop in range(end, i + 1, -1):  # spans of two characters or more, longest first
            if "".join(tokens[i:stop]) in words:
                i = stop
                break
        else:
            if tokens[i] not in words:
                out.append(tokens[i])
            i += 1
    return out
