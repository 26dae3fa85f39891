"""puhui.text preprocessing: every script survives, only punctuation, symbols and stop words go."""
import re

import pytest

from puhui.errors import BadInput
from puhui.text import (clean, detect_lang, drop_stop_words, lower, normalize, preprocess_text,
                        stop_word_languages, stop_words, tokenize)

SEED_REGEX = r"[^a-zA-Z0-9\s]"  # the seed essay's §3.2 cleaning step


def test_seed_regex_deletes_chinese_ours_keeps_it():
    text = "我爱自然语言处理"
    assert re.sub(SEED_REGEX, "", text) == ""
    assert clean(text) == text
    assert preprocess_text(text, "zh") == "爱 自 然 语 言 处 理"   # 我 is a stop word


def test_seed_regex_deletes_accents_and_cyrillic_ours_keeps_them():
    text = "Café Привет"
    assert re.sub(SEED_REGEX, "", text) == "Caf "
    assert clean(text) == "Café Привет"


def test_mixed_chinese_english():
    assert tokenize("我爱Python3编程") == ["我", "爱", "python3", "编", "程"]
    assert preprocess_text("我爱Python3编程！", lang="auto") == "爱 python3 编 程"


def test_bigrams():
    assert tokenize("我爱编程", bigrams=True) == ["我爱", "爱编", "编程"]
    assert tokenize("爱 Python", bigrams=True) == ["爱", "python"]


def test_full_width_normalised():
    assert normalize("ＨＥＬＬＯ　１２３，ｗｏｒｌｄ！") == "HELLO 123,world!"
    assert preprocess_text("ＨＥＬＬＯ，世界！１２３", "en") == "hello 世 界 123"
    assert normalize("ｶﾀｶﾅ") == "カタカナ"


def test_normalize_form():
    assert normalize("e\u0301", "NFC") == "é"
    with pytest.raises(BadInput):
        normalize("x", "NFX")


def test_accents_kept():
    assert clean("Café, naïve résumé!") == "Café naïve résumé"
    assert clean("e\u0301te\u0301") == "e\u0301te\u0301"  # decomposed accents stay on their letters
    assert preprocess_text("Crème Brûlée") == "crème brûlée"


def test_emoji_and_punctuation_removed():
    assert clean("I ❤️ NLP 😀!!! 👨\u200d👩\u200d👧 🇨🇳 ... #tag @you (x) ¥5 ★") == "I NLP tag you x 5"
    assert clean("你好，世界。「引号」【括号】") == "你好 世界 引号 括号"


def test_whitespace_collapsed_and_controls_removed():
    assert clean("  a\t\tb\n\nc\x00d\u3000e\u200bf  ") == "a b c d e f"
    assert clean("co\u00adoperate") == "cooperate"  # the soft hyphen does not split the word


def test_urls_and_emails():
    text = "访问https://example.com/a?b=1获取, mail me@x.org now"
    assert clean(text) == "访问 获取 mail now"
    assert "example" in clean(text, remove_urls=False)
    assert "me" in clean(text, remove_emails=False).split()


def test_decimal_numbers_stay_whole():
    assert tokenize("pi is 3.14, e=2.718.") == ["pi", "is", "3.14", "e", "2.718"]


def test_japanese_korean_cyrillic_and_more_kept():
    assert clean("日本語のテキスト、カタカナ！") == "日本語のテキスト カタカナ"
    assert tokenize("日本語のコンピュータ") == ["日", "本", "語", "の", "コンピュータ"]
    assert tokenize("한국어 텍스트입니다.") == ["한국어", "텍스트입니다"]
    assert tokenize("Привет, МИР!") == ["привет", "мир"]
    assert tokenize("Γειά σου κόσμε") == ["γειά", "σου", "κόσμε"]
    assert clean("مَرْحَبًا بالعالم!") == "مَرْحَبًا بالعالم"       # harakat (combining marks) kept
    assert tokenize("हिन्दी भाषा।") == ["हिन्दी", "भाषा"]            # virama and vowel signs kept
    assert tokenize("می\u200cخواهم") == ["می\u200cخواهم"]           # Persian zero-width non-joiner kept


def test_casefold_and_turkish():
    assert lower("Straße") == "strasse"
    assert lower("ISTANBUL", "tr") == "ıstanbul"
    assert lower("İzmir", "tr-TR") == "izmir"


def test_english_stop_words_removed():
    words = stop_words("en")
    assert {"the", "and", "is", "not", "don", "t"} <= words and 150 <= len(words) <= 300
    out = preprocess_text("The quick brown fox doesn't jump over the lazy dog!")
    assert out == "quick brown fox jump lazy dog"
    assert preprocess_text("The fox", remove_stop_words=False) == "the fox"


def test_chinese_stop_words_removed():
    words = stop_words("zh")
    assert {"的", "了", "是", "在", "和", "我们", "没有", "一个"} <= words and len(words) >= 200
    assert preprocess_text("我们没有时间了，但是他们还是来了。", "zh") == "时 间 来"
    # multi-character stop words match as runs of characters, not as their characters one by one
    assert drop_stop_words(["们", "我", "们"], "zh") == ["们"]
    assert drop_stop_words(["我们", "的"], "zh") == []  # whole tokens too (bigram mode)


def test_stop_words_cached_and_tags():
    assert stop_words("zh-CN") is stop_words("zh-CN")
    assert stop_words("EN_us") == stop_words("en")
    assert stop_word_languages() == ("en", "zh")


def test_unknown_language():
    with pytest.raises(BadInput, match=r"'fr'.*en, zh"):
        stop_words("fr")
    with pytest.raises(BadInput, match="'xx'"):
        preprocess_text("bonjour", lang="xx")
    assert preprocess_text("Bonjour le monde", lang="fr", remove_stop_words=False) == "bonjour le monde"


def test_detect_lang():
    assert detect_lang("我爱自然语言处理") == "zh"
    assert detect_lang("我爱Python") == "zh"
    assert detect_lang("The word 爱 means love") == "en"
    assert detect_lang("hello") == "en"
    assert preprocess_text("这是一个测试", "auto") == "测 试"


def test_bad_text():
    with pytest.raises(BadInput):
        preprocess_text(None)
