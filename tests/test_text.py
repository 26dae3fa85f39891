"""puhui.text preprocessing: every script survives, only punctuation, symbols and stop words go."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import puhui.text
from puhui.errors import BadInput, Unsupported
from puhui.text import (clean, detect_lang, drop_stop_words, lower, normalize, preprocess_text,
                        stop_word_languages, stop_words, tokenize)
from puhui.text.chars import is_han
from puhui.text.chinese import MISSING, _segmenter

TEXT_DIR = Path(puhui.text.__file__).parent


@pytest.fixture(autouse=True, scope="module")
def _segmenter_home(tmp_path_factory):
    """jieba's dictionary cache goes to a temporary PUHUI_HOME, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUHUI_HOME", str(tmp_path_factory.mktemp("puhui-home")))
        _segmenter.cache_clear()
        yield
    _segmenter.cache_clear()

SEED_REGEX = r"[^a-zA-Z0-9\s]"  # the seed essay's §3.2 cleaning step


def test_seed_regex_deletes_chinese_ours_keeps_it():
    text = "我爱自然语言处理"
    assert re.sub(SEED_REGEX, "", text) == ""
    assert clean(text) == text
    assert preprocess_text(text, "zh") == "爱 自然语言 处理"   # 我 is a stop word; words by jieba


def test_seed_regex_deletes_accents_and_cyrillic_ours_keeps_them():
    text = "Café Привет"
    assert re.sub(SEED_REGEX, "", text) == "Caf "
    assert clean(text) == "Café Привет"


def test_mixed_chinese_english():
    assert tokenize("我爱Python3编程") == ["我", "爱", "python3", "编", "程"]
    assert preprocess_text("我爱Python3编程！", lang="auto") == "爱 python3 编程"  # auto -> zh: words


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
    assert preprocess_text("我们没有时间了，但是他们还是来了。", "zh") == "时间 来"
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
    assert preprocess_text("这是一个测试", "auto") == "这是 测试"  # jieba: 这是 / 一个 / 测试


def test_bad_text():
    with pytest.raises(BadInput):
        preprocess_text(None)


def test_chinese_words_kept_whole():
    out = preprocess_text("大模型让更多人受益！", lang="zh")
    assert out == "大 模型 让 更 多 人 受益"
    assert {"模型", "受益"} <= set(out.split())
    assert preprocess_text("我们喜欢自然语言处理。", lang="zh") == "喜欢 自然语言 处理"  # 我们 is a stop word
    assert tokenize("我们喜欢自然语言处理", "zh") == ["我们", "喜欢", "自然语言", "处理"]
    assert tokenize("自然语言处理", "zh-CN") == tokenize("自然语言处理", "zh_Hans") == ["自然语言", "处理"]


def test_auto_segments_chinese_the_same_way():
    for text in ("大模型让更多人受益！", "我们喜欢自然语言处理。"):
        assert detect_lang(text) == "zh"
        assert preprocess_text(text, lang="auto") == preprocess_text(text, lang="zh")


def test_mixed_text_only_han_runs_go_to_jieba():
    text = "我用Python3.12训练GPT-2模型"
    words = tokenize(text, "zh")
    assert words == ["我用", "python3.12", "训练", "gpt", "2", "模型"]
    # the Latin words and numbers are exactly the dictionary-free tokenizer's
    assert [t for t in words if not is_han(t[0])] == [t for t in tokenize(text) if not is_han(t[0])]
    assert preprocess_text("自然语言处理，「很」有趣！（真的）", "zh") == "自然语言 处理 有趣 真的"  # 很 is a stop word


def test_no_chinese_lang_keeps_the_dictionary_free_scheme():
    assert tokenize("我们喜欢自然语言处理") == ["我", "们", "喜", "欢", "自", "然", "语", "言", "处", "理"]
    assert tokenize("自然语言处理", "zh", bigrams=True) == ["自然", "然语", "语言", "言处", "处理"]
    assert preprocess_text("ＨＥＬＬＯ，世界！", "en") == "hello 世 界"


def test_chinese_stop_words_are_words():
    words = stop_words("zh")
    assert {"我们", "他们", "这个", "那个", "因为", "所以", "但是", "如果", "就是", "可以"} <= words
    assert sum(len(w) > 1 for w in words) > len(words) / 2
    # a single-character stop word drops the single-character word, not the character inside a word
    assert preprocess_text("他的目的", "zh") == "目的"


def test_missing_jieba_is_unsupported(monkeypatch):
    monkeypatch.setitem(sys.modules, "jieba", None)  # import jieba now raises ImportError
    _segmenter.cache_clear()
    try:
        with pytest.raises(Unsupported, match="Chinese segmentation needs jieba: pip install jieba"):
            preprocess_text("自然语言处理", "zh")
        assert MISSING == "Chinese segmentation needs jieba: pip install jieba"
        assert preprocess_text("自然语言处理", "en") == "自 然 语 言 处 理"  # no segmenter needed
    finally:
        _segmenter.cache_clear()


def test_segmenter_is_quiet_and_caches_in_puhui_home(tmp_path):
    env = dict(os.environ, PUHUI_HOME=str(tmp_path))
    code = ("import sys, puhui.text as t; assert 'jieba' not in sys.modules; "
            "print(t.preprocess_text('大模型让更多人受益！', 'zh'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "大 模型 让 更 多 人 受益"
    assert r.stderr == ""  # no "Building prefix dict ..."
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"jieba-{_jieba_version()}.cache"]


def _jieba_version() -> str:
    import jieba
    return jieba.__version__


def _text_modules() -> list[str]:
    return sorted(p.stem for p in TEXT_DIR.glob("*.py") if p.stem != "__init__")


def _imports_of(module: str, siblings: set[str]) -> set[str]:
    """The text/ modules that `module` imports anywhere in it (top level or inside a function)."""
    tree = ast.parse((TEXT_DIR / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("puhui.text."):
            names = [node.module.split(".")[2]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[2] for a in node.names if a.name.startswith("puhui.text.")]
        else:
            continue
        found |= {n for n in names if n in siblings}
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as a path (first node repeated at the end), or None."""
    done, path = set(), []

    def visit(node):
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(graph[node]):
            found = visit(nxt)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return None


def test_text_imports_run_one_way():
    modules = set(_text_modules())
    graph = {m: _imports_of(m, modules) for m in modules}
    assert {"cleaning", "codes", "language", "segment"} <= modules
    assert graph["segment"] >= {"cleaning", "chinese"} and "language" not in graph["cleaning"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # the check itself finds a circle


@pytest.mark.parametrize("module", _text_modules())
def test_each_text_module_imports_in_a_fresh_interpreter(module):
    r = subprocess.run([sys.executable, "-c", f"import puhui.text.{module}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
