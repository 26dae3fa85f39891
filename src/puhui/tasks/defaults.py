"""Which models `puhui serve` (and `make run`) serves when none is named: the packaged text and embeddings
models, the packaged speech models whose runtimes are installed, and the default detector once trained."""
from __future__ import annotations

import importlib.util
import shutil

from ..errors import PuhuiError

DEFAULT_MODELS = ("smollm2-135m-instruct", "all-minilm-l6-v2")
# served by default too when their packages, and what runs them, are installed
DEFAULT_SPEECH_MODELS = (("whisper-tiny.en", "faster_whisper"), ("piper-joe", "onnxruntime"))


def default_models() -> list[str]:
    """DEFAULT_MODELS, the packaged speech models whose packages and runtime (the audio extra; espeak-ng for a
    voice) are installed, and the default detector once `puhui train detr` has made it."""
    from .. import packaged, store
    from .detection import DEFAULT_NAME as DEFAULT_DETECTOR

    out = list(DEFAULT_MODELS)
    for name, runtime in DEFAULT_SPEECH_MODELS:
        default = packaged.find(name)
        if default is None or not default.installed() or importlib.util.find_spec(runtime) is None:
            continue
        if runtime == "onnxruntime" and shutil.which("espeak-ng") is None:
            continue
        out.append(name)
    try:
        if store.get(DEFAULT_DETECTOR).task == "detection":
            out.append(DEFAULT_DETECTOR)
    except PuhuiError:
        pass
    return out
