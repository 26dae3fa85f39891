"""Which script a character belongs to, as far as word segmentation cares.

The standard library has no Unicode Script property, so the scripts that matter for segmentation
are recognised by their code-point blocks. Everything else that is a letter or a digit is "other".
"""
from __future__ import annotations

import unicodedata

# (first, last) code points, inclusive
_HAN = ((0x3005, 0x3007),    # 々 〆 〇
        (0x3021, 0x3029), (0x3038, 0x303B),  # Hangzhou numerals, 〻
        (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
        (0x20000, 0x2FA1F), (0x30000, 0x323AF))
_HIRAGANA = ((0x3041, 0x309F), (0x1B001, 0x1B11F))
_KATAKANA = ((0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F), (0x1B000, 0x1B000))
_HANGUL = ((0x1100, 0x11FF), (0x3131, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xFFA0, 0xFFDC))

# zero-width non-joiner / joiner: part of the spelling of words in Persian, Hindi, Malayalam ...
JOINERS = "\u200c\u200d"

# scripts written without spaces whose characters become one token each when no dictionary
# segmenter applies (see segment.py: Chinese Han runs go to jieba)
PER_CHARACTER = ("han", "hiragana")


def _in(cp: int, ranges) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def script_of(ch: str) -> str:
    """'han', 'hiragana', 'katakana', 'hangul' or 'other' for one character."""
    cp = ord(ch)
    if cp < 0x1100:
        return "other"
    if _in(cp, _HAN):
        return "han"
    if _in(cp, _HIRAGANA):
        return "hiragana"
    if _in(cp, _KATAKANA):
        return "katakana"
    if _in(cp, _HANGUL):
        return "hangul"
    return "other"


def is_han(ch: str) -> bool:
    return script_of(ch) == "han" and unicodedata.category(ch)[0] in "LN"


def is_word_char(ch: str) -> bool:
    """A letter or a digit of any script."""
    return unicodedata.category(ch)[0] in "LN"


def is_attached_mark(ch: str) -> bool:
    """A combining mark that belongs to the letter before it (accents, vowel signs, viramas, harakat).

    Enclosing marks (keycap ⃣, circles) and variation selectors (the emoji/text switch) are not kept:
    they decorate symbols, not letters.
    """
    cat = unicodedata.category(ch)
    if cat not in ("Mn", "Mc"):
        return False
    return not is_variation_selector(ch)


def is_variation_selector(ch: str) -> bool:
    cp = ord(ch)
    return 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF


def is_decimal_point(text: str, i: int) -> bool:
    """text[i] is a '.' between two decimal digits, as in 3.14: kept inside the number."""
    return (text[i] == "." and 0 < i < len(text) - 1
            and unicodedata.category(text[i - 1]) == "Nd" and unicodedata.category(text[i + 1]) == "Nd")


def is_invisible(ch: str) -> bool:
    """Soft hyphen, byte-order mark, bidi controls, tag characters, variation selectors: dropped
    without splitting the word they sit in. The zero-width space is a separator, not one of these."""
    return (unicodedata.category(ch) == "Cf" and ch != "\u200b" and ch not in JOINERS) or is_variation_selector(ch)
