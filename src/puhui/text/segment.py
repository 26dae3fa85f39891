"""Word tokenisation: a dictionary segmenter for Chinese, dictionary-free rules for every other script.

Space-delimited scripts (Latin, Cyrillic, Greek, Arabic, Devanagari ...): a word is a run of letters
and digits with their combining marks; everything else separates words.

Chinese (`lang` 'zh', 'zh-CN' ...): each run of Han characters goes to jieba, a dictionary segmenter
(see chinese.py): "我们喜欢自然语言处理" -> 我们 喜欢 自然语言 处理. Only the Han runs go there; the
Latin words and numbers between them are made by the rules above, exactly as without jieba:
"我用Python3.12训练GPT-2模型" -> 我用 python3.12 训练 gpt 2 模型.

Without a Chinese `lang`, and for the other scripts written without spaces, the honest dictionary-free
treatment (a dictionary for Japanese or Thai is not shipped; jieba's is Chinese):
  - Han ideographs and hiragana: one token per character ("我爱编程" -> 我 爱 编 程), or, with
    `bigrams=True`, the overlapping character bigrams of each run (我爱 爱编 编程), the scheme of
    Lucene's CJKAnalyzer. `bigrams=True` asks for that scheme, so it applies to Chinese too.
  - katakana runs stay whole: they are mostly single loanwords (コンピュータ).
  - Hangul runs stay whole: Korean puts spaces between words, so a run is already a word.
  - a change of script ends a word, so Latin letters and digits inside Chinese text stay whole words:
    "我爱Python3编程" -> 我 爱 python3 编 程.
Thai, Lao, Khmer and Burmese also omit spaces; without a dictionary their runs stay whole.
"""
from __future__ import annotations

from .chars import (JOINERS, PER_CHARACTER, is_attached_mark, is_decimal_point, is_invisible, is_word_char,
                    script_of)
from .chinese import chinese_words
from .cleaning import lower
from .codes import is_chinese


def tokenize(text: str, lang: str | None = None, bigrams: bool = False) -> list[str]:
    """Case-folded word tokens of `text`. Segmentation follows the script of each character, so
    mixed-language text works unchanged; `lang` changes case folding (Turkish, Azerbaijani) and, when
    it is Chinese, has Han runs segmented into words by jieba (unless `bigrams`)."""
    text = lower(text, lang)
    words = is_chinese(lang) and not bigrams
    tokens: list[str] = []
    script = None          # script of the run being built, None between runs
    units: list[str] = []  # the run: one unit per character for PER_CHARACTER scripts, else one

    def flush() -> None:
        nonlocal script, units
        units = [u.strip(JOINERS) for u in units]
        if script == "han" and words and units:
            tokens.extend(chinese_words("".join(units)))
        elif script in PER_CHARACTER and bigrams and len(units) > 1:
            tokens.extend(a + b for a, b in zip(units, units[1:]))
        else:
            tokens.extend(u for u in units if u)
        script, units = None, []

    for i, ch in enumerate(text):
        if is_word_char(ch):
            s = script_of(ch)
            if s != script:
                flush()
                script = s
            if s in PER_CHARACTER or not units:
                units.append(ch)
            else:
                units[-1] += ch
        elif units and (is_attached_mark(ch) or ch in JOINERS or is_decimal_point(text, i)):
            units[-1] += ch
        elif is_invisible(ch):
            continue
        else:
            flush()
    flush()
    return tokens
