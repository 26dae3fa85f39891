"""Whisper's input features: the log-mel spectrogram of 16 kHz audio in 30-second windows.

Equal to openai-whisper's `log_mel_spectrogram` and transformers' `WhisperFeatureExtractor`: a periodic
Hann window of 400 samples (25 ms) every 160 samples (10 ms), centred frames with reflect padding, the
power spectrum through a Slaney-style mel filterbank (librosa's `filters.mel`), log10 floored at 1e-10,
clamped to 8 below its maximum and scaled to about [-1, 1]. The last STFT frame is dropped, so 30 s
(480,000 samples) give 3,000 frames.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..errors import BadInput

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE   # 480,000 samples in a window
N_FRAMES = N_SAMPLES // HOP_LENGTH        # 3,000 mel frames in a window


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, linear)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    linear = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, linear)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """[n_mels, 1 + n_fft // 2] float32 triangular filters, area-normalised (librosa's slaney mel, norm="slaney")."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    return weights.astype(np.float32)


def pad_or_trim(audio: np.ndarray | torch.Tensor, length: int = N_SAMPLES):
    """The first `length` samples of `audio` (last axis), zero-padded at the end when shorter."""
    n = audio.shape[-1]
    if n > length:
        return audio[..., :length]
    if n == length:
        return audio
    if isinstance(audio, torch.Tensor):
        return torch.nn.functional.pad(audio, (0, length - n))
    return np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, length - n)])


def log_mel_spectrogram(audio: np.ndarray | torch.Tensor, n_mels: int = 80, padding: int = 0) -> torch.Tensor:
    """float32 [n_mels, (n_samples + padding) // 160] log-mel features of 16 kHz mono samples (80 or 128 bins).

    `padding` zeros are appended first. The clamp to 8 below the maximum is taken over all that is given:
    for one model input pass a 30-second window (`pad_or_trim(audio)`, as transformers does); for a long
    recording pass it whole with padding=N_SAMPLES and cut 3,000-frame windows (as whisper's transcribe
    does). The spectrogram is computed in float64, 3,000 frames at a time.
    """
    if n_mels not in (80, 128):
        raise BadInput(f"Whisper uses 80 or 128 mel bins, not {n_mels}")
    x = torch.as_tensor(np.asarray(audio) if not isinstance(audio, torch.Tensor) else audio)
    if x.ndim != 1 or x.numel() == 0:
        raise BadInput(f"log_mel_spectrogram needs a non-empty 1-D array of samples, got shape {tuple(x.shape)}")
    if x.numel() <= N_FFT // 2:
        raise BadInput(f"{x.numel()} samples are too few for a spectrogram (at least {N_FFT // 2 + 1})")
    if not torch.isfinite(x).all():
        raise BadInput("log_mel_spectrogram: the samples hold NaN or infinity")
    x = x.to(torch.float32)
    if padding > 0:
        x = torch.nn.functional.pad(x, (0, padding))
    n_frames = x.numel() // HOP_LENGTH  # the STFT's 1 + n // hop centred frames, less the last one
    x = torch.nn.functional.pad(x[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[0, 0]
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    filters = torch.from_numpy(mel_filters(n_mels).astype(np.float64))
    blocks = []
    for f0 in range(0, n_frames, N_FRAMES):  # frame f covers padded samples f*hop .. f*hop + n_fft
        f1 = min(f0 + N_FRAMES, n_frames)
        chunk = x[f0 * HOP_LENGTH:(f1 - 1) * HOP_LENGTH + N_FFT].to(torch.float64)
        stft = torch.stft(chunk, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        blocks.append((filters @ stft.abs() ** 2).clamp(min=1e-10).log10().to(torch.float32))
    log_spec = torch.cat(blocks, dim=1)
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0
