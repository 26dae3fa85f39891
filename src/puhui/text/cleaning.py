"""String-to-string steps: Unicode normalisation, cleaning to letters and digits, case folding."""
from __future__ import annotations

import re
import unicodedata

from ..errors import BadInput
from .chars import JOINERS, is_attached_mark, is_decimal_point, is_invisible, is_word_char
from .codes import base_language

FORMS = ("NFC", "NFD", "NFKC", "NFKD")

# ASCII-only character classes, so that a URL or address written against Chinese text
# ("访问https://example.com获取") stops where the Chinese starts.
URL = re.compile(r"(?:(?:https?|ftp)://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.IGNORECASE)
EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")


def normalize(text: str, form: str = "NFKC") -> str:
    """Unicode normalisation. NFKC (the default) folds compatibility forms: full-width ＡＢＣ１２３ to
    ABC123, the ideographic space to a space, ﬁ to fi, ① to 1, half-width ｶﾀｶﾅ to カタカナ."""
    if form not in FORMS:
        raise BadInput(f"unknown Unicode normalisation form {form!r}; use one of {', '.join(FORMS)}")
    return unicodedata.normalize(form, text)


def clean(text: str, remove_urls: bool = True, remove_emails: bool = True) -> str:
    """Keep the letters and digits of every script, with their combining marks; turn everything else
    (punctuation, symbols, emoji, control characters) into spaces; collapse whitespace.

    Decided by Unicode general category, not by ASCII ranges, so café, 中文, かな, 한국어, кириллица,
    العربية and हिन्दी all survive. Zero-width joiners stay inside words (Persian, Indic scripts), a '.'
    between digits stays (3.14), and format characters such as the soft hyphen vanish without
    splitting the word they sit in.
    """
    if remove_urls:
        text = URL.sub(" ", text)
    if remove_emails:
        text = EMAIL.sub(" ", text)
    out: list[str] = []
    in_word = False  # the last character kept is a letter, digit or mark
    for i, ch in enumerate(text):
        if is_word_char(ch) or (in_word and is_attached_mark(ch)):
            out.append(ch)
            in_word = True
        elif in_word and ch in JOINERS and i + 1 < len(text) and (
                is_word_char(text[i + 1]) or is_attached_mark(text[i + 1])):
            out.append(ch)
        elif in_word and is_decimal_point(text, i):
            out.append(ch)
        elif is_invisible(ch):
            continue
        else:
            out.append(" ")
            in_word = False
    return " ".join("".join(out).split())


def lower(text: str, lang: str | None = None) -> str:
    """Case folding (stronger than str.lower: ß -> ss, ς -> σ). Turkish and Azerbaijani fold the
    dotted and dotless i by their own rule: I -> ı, İ -> i."""
    if lang is not None and base_language(lang) in ("tr", "az"):
        text = text.replace("I", "ı").replace("İ", "i")
    return text.casefold()
