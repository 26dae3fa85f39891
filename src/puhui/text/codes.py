"""Language codes: the base subtag of a tag, and whether a tag is Chinese.

The bottom of text/ with chars.py: it imports no other module of the package, so that cleaning (case
folding), segment (the choice of segmenter), stoplist and language can all use it.
"""
from __future__ import annotations

from ..errors import BadInput


def base_language(lang: str) -> str:
    """'zh-Hans-CN' -> 'zh', 'en_US' -> 'en', ' EN ' -> 'en'."""
    if not isinstance(lang, str) or not lang.strip():
        raise BadInput(f"language must be a code such as 'en' or 'zh', got {lang!r}")
    return lang.strip().lower().replace("_", "-").split("-")[0]


def is_chinese(lang: str | None) -> bool:
    """Whether `lang` is a Chinese tag ('zh', 'zh-CN', 'zh_Hant' ...); None is no language at all."""
    return lang is not None and base_language(lang) == "zh"
