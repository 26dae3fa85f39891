"""A Piper voice: a VITS model exported to ONNX, with its .onnx.json (phoneme map, sample rate, scales),
run by ONNX Runtime.

The model takes `input` (int64 [1, n] phoneme ids), `input_lengths` (int64 [1]) and `scales` (float32
[noise_scale, length_scale, noise_w]; `sid` too for a voice of several speakers) and gives float32 audio
[1, 1, 1, samples] at the voice's sample rate. length_scale stretches time: 1 / speed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadCheckpoint, BadInput, Unsupported
from .phonemes import BOS, EOS, PAD, phoneme_ids


@dataclass(frozen=True)
class PiperConfig:
    sample_rate: int
    espeak_voice: str
    phoneme_id_map: dict
    noise_scale: float = 0.667
    length_scale: float = 1.0
    noise_w: float = 0.8
    num_speakers: int = 1
    speaker_id_map: dict | None = None

    @classmethod
    def read(cls, path: Path) -> "PiperConfig":
        try:
            c = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise BadCheckpoint(f"{path}: not a Piper voice config ({e})") from None
        if not isinstance(c, dict) or not isinstance(c.get("phoneme_id_map"), dict):
            raise BadCheckpoint(f"{path}: not a Piper voice config (no phoneme_id_map)")
        if c.get("phoneme_type", "espeak") != "espeak":
            raise Unsupported(f"{path}: phoneme_type {c['phoneme_type']!r}; only espeak voices are supported")
        missing = [s for s in (BOS, EOS, PAD) if s not in c["phoneme_id_map"]]
        if missing:
            raise BadCheckpoint(f"{path}: the phoneme_id_map lacks {', '.join(map(repr, missing))}")
        rate = (c.get("audio") or {}).get("sample_rate")
        if not isinstance(rate, int) or rate <= 0:
            raise BadCheckpoint(f"{path}: no audio.sample_rate")
        inference = c.get("inference") or {}
        return cls(sample_rate=rate, espeak_voice=(c.get("espeak") or {}).get("voice", "en-us"),
                   phoneme_id_map=c["phoneme_id_map"], noise_scale=float(inference.get("noise_scale", 0.667)),
                   length_scale=float(inference.get("length_scale", 1.0)),
                   noise_w=float(inference.get("noise_w", 0.8)), num_speakers=int(c.get("num_speakers", 1)),
                   speaker_id_map=c.get("speaker_id_map") or None)


class PiperVoice:
    """Phoneme ids -> float32 samples in [-1, 1] at `config.sample_rate`."""

    def __init__(self, onnx_path: str | Path, config_path: str | Path | None = None, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise Unsupported("speech synthesis needs onnxruntime: pip install 'puhui[audio]'") from None
        onnx_path = Path(onnx_path)
        self.config = PiperConfig.read(Path(config_path) if config_path else Path(f"{onnx_path}.json"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # no busy-waiting between ops: on cores shared with other models (a server) spinning threads steal
        # their time; measured on a loaded 2-core machine, synthesis was 1.5x faster without it
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise BadCheckpoint(f"{onnx_path}: ONNX Runtime cannot load it ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
        names = {i.name for i in self.session.get_inputs()}
        if not {"input", "input_lengths", "scales"} <= names:
            raise BadCheckpoint(f"{onnx_path}: not a Piper voice (inputs: {', '.join(sorted(names))})")
        self._takes_speaker = "sid" in names

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def ids(self, phonemes: str) -> list[int]:
        return phoneme_ids(phonemes, self.config.phoneme_id_map)

    def synthesize(self, ids: list[int], speed: float = 1.0, speaker: int = 0) -> np.ndarray:
        """float32 samples of one sentence's phoneme ids."""
        if not 0 < speed <= 100:
            raise BadInput(f"speed {speed}: must be more than 0", param="speed")
        c = self.config
        feeds = {"input": np.asarray([ids], dtype=np.int64), "input_lengths": np.asarray([len(ids)], dtype=np.int64),
                 "scales": np.asarray([c.noise_scale, c.length_scale / speed, c.noise_w], dtype=np.float32)}
        if self._takes_speaker:
            feeds["sid"] = np.asarray([speaker], dtype=np.int64)
        audio = self.session.run(None, feeds)[0]
        return np.clip(audio.reshape(-1), -1.0, 1.0).astype(np.float32, copy=False)
