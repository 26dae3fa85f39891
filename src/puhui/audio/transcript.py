"""A transcript (text, segments with times, words with times) and its output formats: text, json,
verbose_json (OpenAI's shapes), srt and vtt (subtitles)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ..errors import BadInput
from .languages import language_name

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float | None = None


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    seek: int = 0                      # the window's start, in mel frames (10 ms)
    tokens: list[int] = field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None
    words: list[Word] | None = None


@dataclass
class Transcript:
    text: str
    language: str                      # a code: "en"
    duration: float                    # seconds of audio
    segments: list[Segment]
    task: str = "transcribe"
    timestamps: str | None = None      # None, "segment" or "word": what the times are

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or [])]

    def format(self, fmt: str = "text", granularities=("segment",)) -> str:
        """The transcript as OpenAI's response_format gives it: json, text, srt, verbose_json or vtt.
        granularities: what verbose_json carries, "segment" and/or "word"."""
        if fmt == "text":
            return self.text + "\n"
        if fmt == "json":
            return json.dumps({"text": self.text}, ensure_ascii=False)
        if fmt == "verbose_json":
            return json.dumps(self.verbose(granularities), ensure_ascii=False)
        if fmt in ("srt", "vtt"):
            return subtitles(self.segments, fmt)
        raise BadInput(f"response_format {fmt!r}: use one of {', '.join(RESPONSE_FORMATS)}",
                       param="response_format")

    def verbose(self, granularities=("segment",)) -> dict:
        out = {"task": self.task, "language": language_name(self.language), "duration": round(self.duration, 3),
               "text": self.text}
        if "segment" in granularities:
            out["segments"] = [{k: v for k, v in asdict(s).items() if k != "words"} for s in self.segments]
        if "word" in granularities:
            out["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end} for w in self.words]
        return out


def _clock(seconds: float, decimal: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def subtitles(segments: list[Segment], fmt: str) -> str:
    """SubRip (numbered cues, 00:00:01,500) or WebVTT (a WEBVTT header, 00:00:01.500) of the segments."""
    decimal = "," if fmt == "srt" else "."
    cues = []
    for i, s in enumerate(seg for seg in segments if seg.text.strip()):
        timing = f"{_clock(s.start, decimal)} --> {_clock(s.end, decimal)}"
        cues.append((f"{i + 1}\n" if fmt == "srt" else "") + f"{timing}\n{s.text.strip()}\n")
    body = "\n".join(cues)
    return ("WEBVTT\n\n" + body) if fmt == "vtt" else body
