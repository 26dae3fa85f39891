"""Text: preprocessing (normalise, clean, case-fold, tokenize, stop words) for every script.

Only standard-library code is imported here; tokenizers and chat templates live in their own
modules of this package and are imported where used.
"""
from .cleaning import clean, lower, normalize
from .language import detect_lang
from .preprocess import preprocess_text
from .segment import tokenize
from .stoplist import drop_stop_words, stop_word_languages, stop_words

__all__ = ["clean", "detect_lang", "drop_stop_words", "lower", "normalize", "preprocess_text",
           "stop_word_languages", "stop_words", "tokenize"]
