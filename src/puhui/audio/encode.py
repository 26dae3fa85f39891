"""Audio out: float32 mono samples -> the bytes of a WAV, raw PCM, FLAC, Ogg Vorbis, MP3, Ogg Opus or AAC stream.

WAV (16-bit) and raw PCM (16-bit signed little-endian, no header) are always there. FLAC, Ogg Vorbis, MP3
and Ogg Opus are written by libsndfile (through soundfile) when its build has them (MP3 from 1.1, Opus from
1.0.29; Opus at 48 kHz, the samples are resampled to it); AAC (ADTS) by PyAV's FFmpeg when PyAV is
installed (faster-whisper brings it). A format this installation cannot write is refused (Unsupported)
before any work is done: `check_format`.

An `Encoder` takes the samples piece by piece (a sentence at a time) and hands back the bytes that are
ready, so that speech can be sent while the rest is synthesised. Streamed, a WAV header says "length
unknown" (0xFFFFFFFF, as streaming servers send it; decoders read to the end). MP3 is constant-bitrate
(about 80 kbit/s), so that a decoder can tell its length from its size: the header frame that the encoder
fills in when it finishes has been sent already, blank. FLAC is not streamed (a FLAC header without its
totals is one libsndfile cannot read back): its bytes all come at close(). The whole-file `encode` gives
exact headers.
"""
from __future__ import annotations

import io
import struct

import numpy as np

from ..errors import BadInput, Unsupported

FORMATS = ("wav", "pcm", "flac", "ogg", "mp3", "opus", "aac")
MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac", "ogg": "audio/ogg",
               "mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac"}
# format -> (libsndfile major format, subtype)
_SNDFILE = {"flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III"),
            "opus": ("OGG", "OPUS")}
_SNDFILE_OPTIONS = {"mp3": {"bitrate_mode": "CONSTANT", "compression_level": 0.5}}
_WHOLE_ONLY = ("flac",)
OPUS_RATE = 48000
_UNKNOWN = 0xFFFFFFFF


def _sndfile_has(fmt: str) -> bool:
    import soundfile as sf

    major, subtype = _SNDFILE[fmt]
    return major in sf.available_formats() and subtype in sf.available_subtypes(major)


def _pyav_has_aac() -> bool:
    try:
        import av
    except ImportError:
        return False
    return "aac" in av.codecs_available


def available_formats() -> list[str]:
    """The formats this installation can write."""
    return [f for f in FORMATS if f in ("wav", "pcm") or (_pyav_has_aac() if f == "aac" else _sndfile_has(f))]


def check_format(fmt: str) -> str:
    """The format name, lower-cased; BadInput for an unknown one, Unsupported for one that cannot be written here."""
    name = str(fmt).lower().strip(".")
    if name not in FORMATS:
        raise BadInput(f"audio format {fmt!r}: use one of {', '.join(FORMATS)}", param="response_format")
    if name in ("wav", "pcm") or name in available_formats():
        return name
    if name == "aac":
        why = "AAC needs PyAV (pip install av, or 'puhui[audio]')"
    else:
        import soundfile as sf
        why = f"the libsndfile {sf.__libsndfile_version__} here cannot write {_SNDFILE[name][1]} in {_SNDFILE[name][0]}"
    raise Unsupported(f"audio format {name!r} is not available: {why}; available here: "
                      f"{', '.join(available_formats())}", param="response_format")


def _int16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """A 44-byte header of 16-bit mono PCM; data_bytes None: unknown length (a stream)."""
    riff = _UNKNOWN if data_bytes is None else 36 + data_bytes
    data = _UNKNOWN if data_bytes is None else data_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16) + b"data" + struct.pack("<I", data))


class _Sink(io.RawIOBase):
    """A seekable in-memory file whose bytes are taken as they are written; rewrites of bytes already
    taken stay here (see the module docstring)."""

    def __init__(self):
        self.buf = bytearray()
        self.pos = 0
        self.sent = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else len(self.buf) + offset
        return self.pos

    def write(self, b) -> int:
        b = bytes(b)
        end = self.pos + len(b)
        if end > len(self.buf):
            self.buf.extend(b"\0" * (end - len(self.buf)))
        self.buf[self.pos:end] = b
        self.pos = end
        return len(b)

    def read(self, n: int = -1) -> bytes:
        end = len(self.buf) if n is None or n < 0 else min(len(self.buf), self.pos + n)
        out = bytes(self.buf[self.pos:end])
        self.pos = end
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.buf[self.sent:])
        self.sent = len(self.buf)
        return out


class Encoder:
    """feed(samples) -> the bytes ready so far; close() -> the rest. stream=False: everything at close(),
    with exact headers."""

    def __init__(self, fmt: str, sample_rate: int, stream: bool = True):
        self.format = check_format(fmt)
        if sample_rate <= 0:
            raise BadInput(f"sample rate {sample_rate} Hz")
        self.input_rate = sample_rate
        self.sample_rate = OPUS_RATE if self.format == "opus" else sample_rate
        self.stream = stream and self.format not in _WHOLE_ONLY
        self._pcm = bytearray()        # wav written whole
        self._started = False
        self._closed = False
        self._sink = _Sink()
        self._file = None
        self._av = None
        if self.format in _SNDFILE:
            import soundfile as sf
            major, subtype = _SNDFILE[self.format]
            self._file = sf.SoundFile(self._sink, "w", self.sample_rate, 1, format=major, subtype=subtype,
                                      **_SNDFILE_OPTIONS.get(self.format, {}))
        elif self.format == "aac":
            self._av = _AACWriter(self._sink, self.sample_rate)

    def feed(self, samples) -> bytes:
        if self._closed:
            raise BadInput("the encoder is closed")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size and not np.isfinite(x).all():
            raise BadInput("audio samples hold NaN or infinity")
        if self.sample_rate != self.input_rate and x.size:
            from .io import _resample
            x = _resample(x, self.input_rate, self.sample_rate)
        if self.format == "pcm":
            return _int16(x)
        if self.format == "wav":
            data = _int16(x)
            if not self.stream:
                self._pcm += data
                return b""
            head = b"" if self._started else wav_header(self.sample_rate, None)
            self._started = True
            return head + data
        if x.size:
            if self._file is not None:
                self._file.write(x)
            else:
                self._av.write(x)
        return self._sink.take() if self.stream else b""

    def close(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        if self.format == "pcm":
            return b""
        if self.format == "wav":
            if self.stream:
                return b"" if self._started else wav_header(self.sample_rate, None)
            return wav_header(self.sample_rate, len(self._pcm)) + bytes(self._pcm)
        if self._file is not None:
            self._file.close()
        else:
            self._av.close()
        return self._sink.take()


def encode(samples, sample_rate: int, fmt: str) -> bytes:
    """The whole file of these samples in this format."""
    enc = Encoder(fmt, sample_rate, stream=False)
    return enc.feed(samples) + enc.close()


class _AACWriter:
    """AAC in ADTS frames through PyAV (FFmpeg's native encoder)."""

    def __init__(self, sink: _Sink, sample_rate: int):
        import av

        self._av = av
        self.container = av.open(sink, mode="w", format="adts")
        self.stream = self.container.add_stream("aac", rate=sample_rate)
        self.stream.layout = "mono"
        self.sample_rate = sample_rate
        self.pts = 0

    def write(self, x: np.ndarray) -> None:
        frame = self._av.AudioFrame.from_ndarray(x[None, :], format="fltp", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self.pts
        self.pts += x.size
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
