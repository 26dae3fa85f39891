"""Chinese word segmentation: jieba's dictionary segmenter, in precise mode with its HMM for unknown words.

One `jieba.Tokenizer` of our own, built on first use and kept: building it reads jieba's dictionary
(about a second) and writes a cache of it, which goes under $PUHUI_HOME/cache (the system's temp
folder if that cannot be made), named by jieba's version so that an upgrade does not read a stale one.
jieba logs "Building prefix dict ..." on stderr while it builds; its logger is raised to WARNING first,
and the warnings its import raises are not shown.
jieba is imported here and only here, when Chinese is first segmented.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from functools import lru_cache

from ..errors import Unsupported
from .chars import is_attached_mark

MISSING = "Chinese segmentation needs jieba: pip install jieba"


def chinese_words(run: str) -> list[str]:
    """The words of `run`, a run of Han characters: chinese_words("我们喜欢自然语言处理") ==
    ["我们", "喜欢", "自然语言", "处理"]. Characters outside jieba's dictionary ranges (rare
    ideographs, 々, 〇) come back one a word, as jieba gives them."""
    return _reattach_marks(_segmenter().lcut(run, HMM=True))


def _reattach_marks(words: list[str]) -> list[str]:
    """jieba splits a combining mark from its ideograph; put it back on the word before it."""
    out: list[str] = []
    for word in words:
        if out and all(is_attached_mark(ch) for ch in word):
            out[-1] += word
        else:
            out.append(word)
    return out


@lru_cache(maxsize=1)
def _segmenter():
    """The one jieba.Tokenizer, initialised quietly; Unsupported when jieba is not installed."""
    try:
        with warnings.catch_warnings():  # jieba 0.42 imports the deprecated pkg_resources where it exists
            warnings.simplefilter("ignore")
            import jieba
    except ImportError:
        raise Unsupported(MISSING) from None
    logging.getLogger("jieba").setLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.tmp_dir = _cache_dir()
    tokenizer.cache_file = f"jieba-{jieba.__version__}.cache"
    tokenizer.initialize()
    return tokenizer


def _cache_dir() -> str:
    """$PUHUI_HOME/cache, made if need be; the system's temp folder when it cannot be made."""
    from ..settings import default_home  # pydantic, imported only once Chinese is segmented

    folder = default_home() / "cache"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return tempfile.gettempdir()
    return str(folder) if os.access(folder, os.W_OK) else tempfile.gettempdir()
