"""Language codes: the base subtag of a tag, and a zh-or-en guess for `lang="auto"`."""
from __future__ import annotations

from ..errors import BadInput
from .chars import is_han


def base_language(lang: str) -> str:
    """'zh-Hans-CN' -> 'zh', 'en_US' -> 'en', ' EN ' -> 'en'."""
    if not isinstance(lang, str) or not lang.strip():
        raise BadInput(f"language must be a code such as 'en' or 'zh', got {lang!r}")
    return lang.strip().lower().replace("_", "-").split("-")[0]


def detect_lang(text: str) -> str:
    """'zh' when Han characters are at least as many as the other words, else 'en'.

    Only chooses between the two languages puhui ships stop words for. A Chinese word is one to three
    characters, so comparing characters with words leans towards 'zh' for mixed text, which is
    the language whose stop words such text mostly carries.
    """
    from .segment import tokenize

    tokens = tokenize(text)
    han = sum(1 for t in tokens for ch in t if is_han(ch))
    other = sum(1 for t in tokens if not is_han(t[0]))
    return "zh" if han and han >= other else "en"
