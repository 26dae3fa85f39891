"""The seed's `preprocess_text` (its §3.2), done for every script.

The seed cleans with re.sub(r"[^a-zA-Z0-9\\s]", "", text), which deletes every Chinese character (and
every accent, every Cyrillic letter ...). This pipeline decides by Unicode category instead.
"""
from __future__ import annotations

from ..errors import BadInput
from .cleaning import clean, normalize
from .language import detect_lang
from .segment import tokenize
from .stoplist import drop_stop_words


def preprocess_text(text: str, lang: str = "en", remove_stop_words: bool = True) -> str:
    """Normalise (NFKC), clean, case-fold, tokenize, drop stop words, join with spaces.

    `lang` picks the stop-word list ('en', 'zh'); "auto" picks zh or en by counting Han characters.
    Chinese (lang 'zh', or "auto" that picks it) comes out in words, segmented by jieba:
    preprocess_text("我们喜欢自然语言处理。", "zh") == "喜欢 自然语言 处理", and
    preprocess_text("大模型让更多人受益！", "zh") == "大 模型 让 更 多 人 受益". With another lang,
    Han characters stay one a token (see segment.py).
    """
    if not isinstance(text, str):
        raise BadInput(f"preprocess_text needs a str, got {type(text).__name__}")
    text = clean(normalize(text))
    if lang == "auto":
        lang = detect_lang(text)
    tokens = tokenize(text, lang)
    if remove_stop_words:
        tokens = drop_stop_words(tokens, lang)
    return " ".join(tokens)
