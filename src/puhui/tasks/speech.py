"""Speech task objects: `Transcriber` (Whisper: speech -> text) and `Voice` (Piper: text -> speech).

    asr = puhui.load("whisper-tiny.en")
    t = asr.transcribe("meeting.wav", timestamps="segment")     # a Transcript
    t.text, t.segments[0].start, t.format("srt")
    asr.transcribe(samples_16k, engine="puhui")                  # our PyTorch Whisper instead of CTranslate2

    voice = puhui.load("piper-joe")
    samples, rate = voice.speak("Hello there.", speed=1.2)
    for chunk in voice.stream(long_text): ...                  # float32 samples, a sentence at a time
    for data in voice.encoded(long_text, "mp3"): ...           # the bytes of an MP3 stream, as they are ready

Transcription engines: "faster-whisper" (CTranslate2, int8 weights, beam search of 5, temperature fallback,
Silero voice-activity filter: the default) and "puhui" (models/whisper.py and audio/transcribe.py: float32,
greedy, whisper's no-speech check). Both read audio in 30-second windows; silence gives an empty transcript.
"""
from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import BadInput, Unsupported

ENGINES = ("faster-whisper", "puhui")
TIMESTAMPS = (None, "segment", "word")
MIN_SPEED, MAX_SPEED = 0.25, 4.0     # OpenAI's range for speech
SENTENCE_SILENCE_S = 0.2             # between sentences (piper's default)
AUDIO_EXTRA = "pip install 'puhui[audio]'"


def _threads() -> int:
    import torch

    from ..settings import get_settings
    return get_settings().threads or torch.get_num_threads()


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class Transcriber:
    """A Whisper model from the store (a CTranslate2 folder, or a Hugging Face one for engine "puhui"): its
    Manifest, or a folder path."""

    task = "transcription"

    def __init__(self, manifest, engine: str = "faster-whisper", compute_type: str = "int8", beam_size: int = 5,
                 vad_filter: bool = True, threads: int | None = None):
        from ..audio.transcribe import WhisperTokens
        from ..models.whisper import load_whisper_tokenizer

        self.manifest = manifest
        self.name = getattr(manifest, "name", str(manifest))
        self.folder = Path(manifest) if isinstance(manifest, (str, Path)) else manifest.folder
        self.tokenizer = load_whisper_tokenizer(self.folder)
        self.special = WhisperTokens.from_tokenizer(self.tokenizer)
        self.engine = _check_engine(engine)
        self.compute_type, self.beam_size, self.vad_filter = compute_type, beam_size, vad_filter
        self.threads = threads or _threads()
        self._engines: dict = {}
        self._lock = threading.Lock()
        model = self.load_engine(self.engine)   # the default engine now: a missing extra or a bad file fails at load
        # English-only Whisper vocabularies list the language tokens too: the model's own size tells
        self.multilingual = bool(model.config.is_multilingual if self.engine == "puhui"
                                 else model.model.is_multilingual)

    def __repr__(self) -> str:
        return f"Transcriber({self.name!r}, engine={self.engine!r})"

    @property
    def languages(self) -> list[str]:
        return list(self.special.languages) if self.multilingual else ["en"]

    def load_engine(self, engine: str):
        """The model an engine runs ("faster-whisper": a faster_whisper.WhisperModel, "puhui": models/whisper.py's
        Whisper), loaded on first use."""
        with self._lock:
            if engine not in self._engines:
                self._engines[engine] = self._load(engine)
            return self._engines[engine]

    def _load(self, engine: str):
        if engine == "puhui":
            from ..models.whisper import load_whisper
            return load_whisper(self.folder)[0].eval()
        if not (self.folder / "model.bin").is_file():
            raise Unsupported(f"model {self.name!r} is not a CTranslate2 folder; faster-whisper cannot run it "
                              f"(use engine='puhui')")
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise Unsupported(f"the faster-whisper engine needs faster-whisper: {AUDIO_EXTRA} "
                              f"(or use engine='puhui')") from None
        return WhisperModel(str(self.folder), device="cpu", compute_type=self.compute_type, cpu_threads=self.threads)

    def check_language(self, language: str | None) -> str | None:
        """The language code to decode in (None: detect); BadInput for one the model does not know."""
        if language is None or language == "":
            return None
        from ..audio.languages import language_code
        code = language_code(language)
        if code not in self.languages:
            if not self.multilingual:
                raise BadInput(f"language {language!r}: model {self.name!r} is English-only (language 'en')")
            raise BadInput(f"language {language!r}: model {self.name!r} knows {', '.join(self.languages)}")
        return code

    @staticmethod
    def read(audio) -> np.ndarray:
        """16 kHz float32 mono samples of a path, a file's bytes or samples (audio.io.load_audio): BadInput
        naming the problem for a file that is not audio."""
        from ..audio.io import load_audio

        return load_audio(audio)

    def transcribe(self, audio, language: str | None = None, timestamps: str | None = None,
                   engine: str | None = None, task: str = "transcribe", prompt: str | None = None,
                   temperature: float = 0.0):
        """The Transcript of `audio`: a path, a file's bytes, or samples (16 kHz, or see audio.io.load_audio).

        timestamps: None (segments are the decoded windows), "segment" (whisper's timestamp tokens) or "word"
        (also each word's start and end; faster-whisper only). task "translate": into English (multilingual
        models only). prompt: text that precedes the audio (faster-whisper only). temperature 0: greedy,
        with faster-whisper's fallback to higher temperatures on a failed window; above 0: sampling at it."""
        from ..audio.mel import SAMPLE_RATE

        engine = _check_engine(engine or self.engine)
        if timestamps not in TIMESTAMPS:
            raise BadInput(f"timestamps {timestamps!r}: use None, 'segment' or 'word'")
        if task not in ("transcribe", "translate"):
            raise BadInput(f"task {task!r}: use transcribe or translate")
        if task == "translate" and not self.multilingual:
            raise Unsupported(f"translation is not available with {self.name!r}: it is an English-only model "
                              f"(translation into English needs a multilingual Whisper such as whisper-base)")
        if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 1:
            raise BadInput(f"temperature {temperature!r}: must be between 0 and 1", param="temperature")
        language = self.check_language(language)
        samples = self.read(audio)
        duration = len(samples) / SAMPLE_RATE
        if engine == "puhui":
            segments, language = self._ours(samples, language, timestamps, task, prompt, temperature)
        else:
            segments, language = self._faster(samples, language, timestamps, task, prompt, temperature)
        from ..audio.transcript import Transcript
        return Transcript(text="".join(s.text for s in segments).strip(), language=language or "en",
                          duration=duration, segments=segments, task=task, timestamps=timestamps)

    def translate(self, audio, **options):
        """The Transcript of `audio` translated into English (multilingual models)."""
        return self.transcribe(audio, task="translate", **options)

    def _faster(self, samples, language, timestamps, task, prompt, temperature):
        from ..audio.transcript import Segment, Word

        model = self.load_engine("faster-whisper")
        temperatures = temperature if temperature > 0 else (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
        parts, info = model.transcribe(samples, language=language, task=task, beam_size=self.beam_size,
                                       temperature=temperatures, initial_prompt=prompt or None,
                                       without_timestamps=timestamps is None, word_timestamps=timestamps == "word",
                                       vad_filter=self.vad_filter)
        segments = []
        for s in parts:
            words = [Word(w.word, round(float(w.start), 3), round(float(w.end), 3), round(float(w.probability), 4))
                     for w in s.words] if s.words is not None else None
            segments.append(Segment(id=len(segments), start=round(float(s.start), 3), end=round(float(s.end), 3),
                                    text=s.text, seek=int(s.seek), tokens=list(s.tokens),
                                    temperature=float(s.temperature), avg_logprob=float(s.avg_logprob),
                                    compression_ratio=float(s.compression_ratio),
                                    no_speech_prob=float(s.no_speech_prob), words=words))
        return segments, language or info.language

    def _ours(self, samples, language, timestamps, task, prompt, temperature):
        import torch

        from ..audio.transcribe import decode_windows, window_segments
        from ..audio.transcript import Segment

        if timestamps == "word":
            raise Unsupported("word timestamps need the faster-whisper engine (engine 'puhui' gives segments)")
        if prompt:
            raise Unsupported("a prompt needs the faster-whisper engine (engine 'puhui' decodes without one)")
        if temperature > 0:
            raise Unsupported("engine 'puhui' decodes greedily: temperature must be 0")
        model = self.load_engine("puhui")
        segments = []
        with torch.inference_mode():
            for w in decode_windows(model, self.tokenizer, samples, language, task, timestamps == "segment",
                                    skip_silence=True):
                language = language or w.language
                for start, end, tokens in window_segments(w, self.tokenizer, self.special):
                    text = self.tokenizer.decode(tokens)
                    if not text.strip():
                        continue
                    segments.append(Segment(id=len(segments), start=round(start, 3), end=round(end, 3), text=text,
                                            seek=w.seek, tokens=tokens, avg_logprob=w.avg_logprob,
                                            compression_ratio=_compression_ratio(text),
                                            no_speech_prob=w.no_speech_prob))
        return segments, language


def _check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise BadInput(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    return engine


class Voice:
    """A Piper voice from the store (an .onnx model with its .onnx.json), phonemes by espeak-ng: its Manifest, or
    the .onnx file's path."""

    task = "speech"

    def __init__(self, manifest, threads: int | None = None):
        from ..audio.phonemes import espeak_program
        from ..audio.piper import PiperVoice

        self.manifest = manifest
        self.name = getattr(manifest, "name", str(manifest))
        if isinstance(manifest, (str, Path)):
            onnx = Path(manifest)
            config = Path(f"{onnx}.json")
        else:
            onnx = manifest.path()
            config = manifest.path(f"{manifest.main}.json")
        espeak_program()
        self.voice = PiperVoice(onnx, config, threads or _threads())
        self.sample_rate = self.voice.sample_rate

    def __repr__(self) -> str:
        return f"Voice({self.name!r}, {self.sample_rate} Hz)"

    def stream(self, text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
        """float32 samples, a sentence at a time (each followed by a short pause, but the last)."""
        from ..audio.phonemes import has_words, phonemize_clauses, split_sentences

        _check_speed(speed)
        if not isinstance(text, str):
            raise BadInput(f"the text to speak must be a string, not {type(text).__name__}", param="text")
        if not text.strip():
            raise _nothing_to_say("the text to speak is empty")
        if not has_words(text):       # the one rule: without a letter or a digit there is nothing to say
            raise _nothing_to_say(f"nothing to say in the text {text[:80]!r}: it has no words (no letter or digit); "
                                  "emoji, punctuation, symbols or control characters alone are not spoken")
        sentences = split_sentences(text)
        gap = np.zeros(int(SENTENCE_SILENCE_S * self.sample_rate), dtype=np.float32)
        no_ids = len(self.voice.ids(""))
        spoke = False
        for i, clauses in enumerate(sentences):
            phonemes = phonemize_clauses(clauses, self.voice.config.espeak_voice)
            ids = self.voice.ids(phonemes)
            if len(ids) == no_ids:    # no phoneme the voice knows: it would only make a breath of silence
                continue
            audio = self.voice.synthesize(ids, speed)
            spoke = True
            yield np.concatenate([audio, gap]) if i < len(sentences) - 1 else audio
        if not spoke:
            raise _nothing_to_say(f"nothing to say in the text {text[:80]!r}: no words espeak-ng can pronounce")

    def speak(self, text: str, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """(float32 samples, sample rate) of the whole text."""
        return np.concatenate(list(self.stream(text, speed))), self.sample_rate

    @staticmethod
    def media_type(fmt: str) -> str:
        """The media type of an audio format this installation can write (BadInput / Unsupported otherwise,
        about "response_format")."""
        from ..audio.encode import MEDIA_TYPES, check_format

        return MEDIA_TYPES[check_format(fmt)]

    def encoded(self, text: str, fmt: str = "wav", speed: float = 1.0, sample_rate: int | None = None,
                stream: bool = True) -> Iterator[bytes]:
        """The bytes of the speech in format `fmt` (wav, pcm, flac, ogg, mp3, opus, aac), as they are ready.
        sample_rate: resample to it (default the voice's own; Opus is always 48 kHz)."""
        from ..audio.encode import Encoder, check_format

        check_format(fmt)
        _check_speed(speed)
        rate = sample_rate or self.sample_rate
        encoder = Encoder(fmt, rate, stream=stream)
        for samples in self.stream(text, speed):
            if rate != self.sample_rate:
                from ..audio.io import _resample
                samples = _resample(samples, self.sample_rate, rate)
            data = encoder.feed(samples)
            if data:
                yield data
        tail = encoder.close()
        if tail:
            yield tail


def _nothing_to_say(message: str) -> BadInput:
    e = BadInput(message, param="text")
    e.code = "nothing_to_say"
    return e


def _check_speed(speed) -> None:
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise BadInput(f"speed {speed!r}: must be between {MIN_SPEED} and {MAX_SPEED}", param="speed")
