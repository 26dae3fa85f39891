"""Speech speed: real-time factors of transcription (faster-whisper and puhui's PyTorch Whisper, the same clips and
the same tiny.en weights) and of synthesis (the Piper voice through ONNX Runtime).

    python bench/speech.py               # the benchmark; writes bench/results/speech.json
    python bench/speech.py --quick       # a smoke run: 1 repeat, the two short clips
    python bench/speech.py --repeats 3 --threads 2

Clips: English paragraphs of about 8, 25 and 45 seconds, spoken by the packaged voice (piper-joe); the synthesis
of these clips is the synthesis benchmark. Every clip is then transcribed by the packaged Whisper tiny.en
(whisper-tiny.en, CTranslate2 weights) with:

- faster-whisper, as `puhui.load(...).transcribe` runs it by default (and so `puhui transcribe` and
  `/v1/audio/transcriptions` in their default text/json formats): int8 weights, beam search of 5, temperature
  fallback, the Silero voice-activity filter, no timestamps (the target row);
- the same with segment timestamps, as the srt, vtt and verbose_json formats ask (for information: whisper then
  also decodes a timestamp token pair per segment and cuts windows at them);
- faster-whisper greedy float32: beam 1, no voice-activity filter, no fallback: the decoding puhui's engine does;
- puhui: `transcribe(..., engine="puhui")`: models/whisper.py in float32 (the same weights, dequantised by
  formats/ctranslate2.py), greedy with whisper's timestamp rules and no-speech check.

Real-time factor (RTF) = wall time / seconds of audio (lower is faster; 0.1 is ten times faster than real
time), summed over the clips. The engines run interleaved, repeat after repeat, after an untimed warm-up, on
`--threads` threads each (torch, CTranslate2, ONNX Runtime); medians are reported, with the load average.
Word error rates against the paragraphs are recorded as a check that the fast engines are also right.
Targets, printed as PASS/FAIL: faster-whisper (default) RTF <= 0.1; puhui within 3x of faster-whisper
greedy float32 (the like-for-like decoding); synthesis RTF <= 0.2.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("PUHUI_HOME", str(Path.home() / ".cache" / "puhui"))

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PARAGRAPHS = {
    "short": "The weather was clear this morning, so we walked down to the harbour to watch the boats come in.",
    "medium": ("Speech recognition turns spoken words into written text. It listens to the sound, cuts it into "
               "short frames, and guesses which words were most likely said. Modern systems learn these guesses "
               "from thousands of hours of recordings. They still make mistakes with rare names, strong accents "
               "and noisy rooms, but for clear speech they are often very accurate."),
    "long": ("Last summer my family rented a small house near the mountains for two weeks. Every morning we "
             "woke up early and made coffee on the old stove in the kitchen. After breakfast we packed some "
             "sandwiches and walked along the river until we reached the waterfall. The children loved to throw "
             "stones into the water and count the ripples. In the afternoon it often rained, so we stayed inside "
             "and played cards or read books by the window. On the last evening the sky cleared, and we sat "
             "outside watching the stars until midnight. It was the quietest holiday we have had in years, and "
             "everyone agreed that we should go back next summer."),
}
TARGET_FW_RTF, TARGET_OURS_RATIO, TARGET_SYNTH_RTF = 0.1, 3.0, 0.2


from puhui.audio.wer import wer  # noqa: E402  (the same WER as the tests)
from _machine import machine  # noqa: E402  (bench/_machine.py)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="1 repeat, the short and medium clips")
    ap.add_argument("--out", default=str(RESULTS / "speech.json"))
    a = ap.parse_args()
    if a.quick:
        a.repeats = 1
    torch.set_num_threads(a.threads)
    try:
        import faster_whisper
        import onnxruntime
    except ImportError as e:
        print(f"{e.name} is not installed: pip install 'puhui[audio]'", file=sys.stderr)
        return 2

    from puhui.audio.io import load_audio
    from puhui.tasks import load

    clips = {k: v for k, v in PARAGRAPHS.items() if not a.quick or k != "long"}
    asr = load("whisper-tiny.en", threads=a.threads)
    voice = load("piper-joe", threads=a.threads)
    greedy = faster_whisper.WhisperModel(str(asr.folder), device="cpu", compute_type="float32", cpu_threads=a.threads)
    asr.load_engine("puhui")                             # both engines loaded before any timing

    def synthesize(text):
        return voice.speak(text)

    def fw_default(samples):
        return asr.transcribe(samples, engine="faster-whisper").text

    def fw_timestamps(samples):
        return asr.transcribe(samples, engine="faster-whisper", timestamps="segment").text

    def fw_greedy(samples):
        segments, _ = greedy.transcribe(samples, beam_size=1, temperature=0.0, vad_filter=False,
                                        condition_on_previous_text=False)
        return "".join(s.text for s in segments).strip()

    def ours(samples):
        return asr.transcribe(samples, engine="puhui", timestamps="segment").text

    engines = [("faster-whisper int8 beam5 vad", fw_default), ("faster-whisper float32 greedy", fw_greedy),
               ("puhui float32 greedy", ours), ("faster-whisper int8 beam5 vad +timestamps", fw_timestamps)]
    audio = {name: load_audio(synthesize(text)[0], source_sr=voice.sample_rate) for name, text in clips.items()}
    durations = {name: len(x) / 16000 for name, x in audio.items()}
    total = sum(durations.values())
    print(f"{len(clips)} clips, {total:.1f} s of speech ({', '.join(f'{k} {v:.1f} s' for k, v in durations.items())})"
          f"; {a.threads} threads; load average {os.getloadavg()[0]:.2f}", flush=True)
    for _, fn in engines:                                # untimed warm-up
        fn(audio["short"])

    runs = []
    for rep in range(a.repeats):
        t0 = time.perf_counter()
        for text in clips.values():
            synthesize(text)
        runs.append({"engine": "piper-joe synthesis", "repeat": rep, "wall_s": time.perf_counter() - t0,
                     "audio_s": total})
        for name, fn in (engines if rep % 2 == 0 else engines[::-1]):
            wall, errors = 0.0, {}
            for clip, samples in audio.items():
                t0 = time.perf_counter()
                text = fn(samples)
                wall += time.perf_counter() - t0
                errors[clip] = round(wer(clips[clip], text), 4)
            runs.append({"engine": name, "repeat": rep, "wall_s": wall, "audio_s": total, "wer": errors})
        for r in runs[-len(engines) - 1:]:
            r["rtf"] = r["wall_s"] / r["audio_s"]
            print(f"  repeat {rep + 1}: {r['engine']:32} RTF {r['rtf']:.3f}  ({r['wall_s']:.1f} s)"
                  + (f"  WER {r['wer']}" if "wer" in r else ""), flush=True)

    summary = {}
    for name in ["piper-joe synthesis"] + [n for n, _ in engines]:
        rs = [r for r in runs if r["engine"] == name]
        summary[name] = {"rtf": statistics.median(r["rtf"] for r in rs),
                         "rtf_range": [min(r["rtf"] for r in rs), max(r["rtf"] for r in rs)]}
        if "wer" in rs[0]:
            summary[name]["wer"] = rs[0]["wer"]
    fw, fw_g, mine, fw_ts = (summary[n]["rtf"] for n, _ in engines)
    synth = summary["piper-joe synthesis"]["rtf"]
    print(f"\n{'engine':34}{'RTF':>8}{'x real time':>13}")
    for name, s in summary.items():
        print(f"{name:34}{s['rtf']:>8.3f}{1 / s['rtf']:>12.1f}x")
    checks = {"faster_whisper_rtf": fw, "faster_whisper_timestamps_rtf": fw_ts, "puhui_over_faster_whisper_greedy": mine / fw_g,
              "puhui_over_faster_whisper_default": mine / fw, "synthesis_rtf": synth,
              "faster_whisper_pass": fw <= TARGET_FW_RTF, "puhui_pass": mine / fw_g <= TARGET_OURS_RATIO,
              "synthesis_pass": synth <= TARGET_SYNTH_RTF}
    print(f"\n{'PASS' if checks['faster_whisper_pass'] else 'FAIL'}  transcription RTF, tiny.en through faster-whisper "
          f"(int8, beam 5, VAD): {fw:.3f} (target <= {TARGET_FW_RTF}); with segment timestamps {fw_ts:.3f}")
    print(f"{'PASS' if checks['puhui_pass'] else 'FAIL'}  puhui / faster-whisper, both float32 greedy: "
          f"{mine / fw_g:.2f}x the time (target <= {TARGET_OURS_RATIO}x); against faster-whisper's default "
          f"configuration: {mine / fw:.2f}x")
    print(f"{'PASS' if checks['synthesis_pass'] else 'FAIL'}  synthesis RTF, piper-joe through ONNX Runtime: "
          f"{synth:.3f} (target <= {TARGET_SYNTH_RTF})")
    out = {
        "benchmark": "speech", "clips": {k: {"text": clips[k], "seconds": durations[k]} for k in clips},
        "config": {k: v for k, v in vars(a).items() if k not in ("out", "quick")} | {"quick": a.quick},
        "runs": runs, "summary": summary, "checks": checks,
        "versions": {"torch": torch.__version__, "faster_whisper": faster_whisper.__version__,
                     "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "machine": machine(),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
