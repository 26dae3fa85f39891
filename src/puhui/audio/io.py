"""Audio in: a file, its bytes or an array -> float32 mono samples at 16 kHz (or the rate asked for).

Files are decoded by libsndfile (through soundfile): WAV, FLAC, OGG/Vorbis/Opus, AIFF ..., and MP3 where
the libsndfile build has it (1.1 and later). Several channels are averaged to one; other sample rates
are converted with a polyphase filter (scipy.signal.resample_poly), the anti-aliasing kind of resampling.

A truncated file is refused, never read in part: libsndfile reports a cut FLAC or Ogg file, but reads a WAV or
AIFF whose data chunk declares more bytes than the file holds as if it were whole (it only logs "should be"),
so those chunk sizes are checked here first (a stream's "length unknown", 0xFFFFFFFF, is taken as it says).
"""
from __future__ import annotations

import io
import os
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import BadInput, Unsupported
from .mel import SAMPLE_RATE

# containers libsndfile does not read (or, for MP3, may not have been built with), by their first bytes
_OTHER_FORMATS = ((b"ID3", 0, "MP3"), (b"\xff\xfb", 0, "MP3"), (b"\xff\xf3", 0, "MP3"), (b"\xff\xf2", 0, "MP3"),
                  (b"ftyp", 4, "MP4/M4A"), (b"\x1a\x45\xdf\xa3", 0, "WebM/Matroska"),
                  (b"\xff\xf1", 0, "AAC"), (b"\xff\xf9", 0, "AAC"), (b"\x30\x26\xb2\x75", 0, "WMA/ASF"))


def load_audio(source, sr: int = SAMPLE_RATE, source_sr: int | None = None) -> np.ndarray:
    """float32 mono samples at `sr` Hz from a path, the bytes of a file, or an array of samples.

    An array is [n] or [n, channels] (soundfile's layout; [channels, n] is taken when the first axis
    is the short one, at most 8); its rate is `source_sr`, by default `sr`. Integer samples are scaled
    to [-1, 1). Raises BadInput (naming the file) for a missing, empty, corrupt or non-audio input and
    Unsupported for a compressed format libsndfile cannot decode here.
    """
    if sr <= 0:
        raise BadInput(f"sample rate {sr} Hz")
    if isinstance(source, (str, os.PathLike)):
        samples, rate = _read_file(Path(source))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_data_chunk(io.BytesIO(data), len(data), "the audio bytes")
        samples, rate = _decode(io.BytesIO(data), data[:16], "the audio bytes")
    else:
        samples, rate = _from_array(source), source_sr or sr
    return _resample(_to_mono(samples), rate, sr)


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    if not path.is_file():
        raise BadInput(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: empty file, not audio")
    with open(path, "rb") as f:
        head = f.read(16)
        _check_data_chunk(f, path.stat().st_size, str(path))
    return _decode(path, head, str(path))


_UNKNOWN_LENGTH = 0xFFFFFFFF


def _check_data_chunk(f, size: int, name: str) -> None:
    """BadInput for a WAV (RIFF) or AIFF file whose sample data chunk declares more bytes than the file holds."""
    f.seek(0)
    head = f.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        order, data_id, what = "<", b"data", "data"
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        order, data_id, what = ">", b"SSND", "SSND"
    else:
        return
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk, length = struct.unpack(order + "4sI", f.read(8))
        if chunk == data_id:
            there = size - pos - 8
            if there < length != _UNKNOWN_LENGTH:
                raise BadInput(f"{name}: truncated audio: the {what} chunk declares {length:,} bytes, {there:,} "
                               "are there")
            return
        pos += 8 + length + (length & 1)          # chunks are padded to an even size


def _decode(file, head: bytes, name: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if not head:
        raise BadInput(f"{name}: empty, not audio")
    try:
        samples, rate = sf.read(file, dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as e:  # sf.LibsndfileError is a RuntimeError
        other = next((fmt for magic, at, fmt in _OTHER_FORMATS if head[at:at + len(magic)] == magic), None)
        decodable = other is None or (other == "MP3" and "MP3" in sf.available_formats())
        if not decodable:  # then it is a corrupt file of a format libsndfile reads
            raise Unsupported(f"{name}: {other} audio, which this libsndfile cannot decode "
                              f"(convert it to WAV, FLAC or OGG)") from None
        reason = getattr(e, "error_string", None) or str(e)  # libsndfile's words, without the file object
        raise BadInput(f"{name}: not an audio file, or a corrupt one ({reason})") from None
    if samples.shape[0] == 0:
        raise BadInput(f"{name}: holds no audio samples")
    if not np.isfinite(samples).all():
        raise BadInput(f"{name}: corrupt audio (NaN or infinite samples)")
    return samples, rate


def _from_array(a) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim not in (1, 2) or a.size == 0:
        raise BadInput(f"audio samples must be a non-empty [n] or [n, channels] array, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        a = (a.astype(np.float64) - (info.max + 1 + info.min) / 2) / ((info.max - info.min + 1) / 2)
    elif not np.issubdtype(a.dtype, np.floating):
        raise BadInput(f"audio samples must be numbers, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise BadInput("audio samples hold NaN or infinity")
    if a.ndim == 2 and a.shape[0] <= 8 and a.shape[0] < a.shape[1]:
        a = a.T  # [channels, n] -> [n, channels]
    return a.astype(np.float32, copy=False)


def _to_mono(samples: np.ndarray) -> np.ndarray:
    if samples.ndim == 1:
        return samples
    return samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]


def _resample(samples: np.ndarray, rate: int, sr: int) -> np.ndarray:
    if rate <= 0:
        raise BadInput(f"source sample rate {rate} Hz")
    if rate != sr:
        from scipy.signal import resample_poly

        ratio = Fraction(sr, rate)
        samples = resample_poly(samples, ratio.numerator, ratio.denominator)
    return np.ascontiguousarray(samples, dtype=np.float32)
