"""Languages: a zh-or-en guess for `lang="auto"`, and (from codes.py) the base subtag of a tag."""
from __future__ import annotations

from .chars import is_han
from .codes import base_language
from .segment import tokenize

__all__ = ["base_language", "detect_lang"]


def detect_lang(text: str) -> str:
    """'zh' when Han characters are at least as many as the other words, else 'en'.

    Only chooses between the two languages puhui ships stop words for. A Chinese word is one to three
    characters, so comparing characters with words leans towards 'zh' for mixed text, which is
    the language whose stop words such text mostly carries. Counted on the dictionary-free tokens
    (one Han character a token), so the guess needs no segmenter.
    """
    tokens = tokenize(text)
    han = sum(1 for t in tokens for ch in t if is_han(ch))
    other = sum(1 for t in tokens if not is_han(t[0]))
    return "zh" if han and han >= other else "en"
