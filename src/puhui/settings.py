"""Settings from the environment (PUHUI_*) and an optional TOML file at $PUHUI_HOME/config.toml."""
from __future__ import annotations

import json
import os
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from functools import lru_cache
from pathlib import Path

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# OpenAI model names that existing client code uses, resolved to our packaged defaults.
DEFAULT_ALIASES = {
    "text-davinci-003": "smollm2-135m-instruct",
    "gpt-3.5-turbo-instruct": "smollm2-135m-instruct",
    "gpt-3.5-turbo": "smollm2-135m-instruct",
    "gpt-4o-mini": "smollm2-135m-instruct",
    "text-embedding-ada-002": "all-minilm-l6-v2",
    "text-embedding-3-small": "all-minilm-l6-v2",
    "whisper-1": "whisper-tiny.en",
    "tts-1": "piper-joe",
}


def parse_api_keys(raw) -> list[str]:
    """API keys as PUHUI_API_KEYS gives them: a JSON list of strings, or keys separated by commas (a value that
    starts with "[" but is no JSON list of strings is split at commas too). A list (the TOML file's) is kept as
    it is. Blank keys are dropped. The one parser of the keys: cli.py and serve/ read `get_settings().api_keys`."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = raw.strip()
        if raw.startswith("["):
            try:
                keys = json.loads(raw)
            except ValueError:
                keys = None
            if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
                return [k for k in keys if k.strip()]
        return [k.strip() for k in raw.split(",") if k.strip()]
    return [k for k in raw if not isinstance(k, str) or k.strip()]


def default_home() -> Path:
    return Path(os.environ.get("PUHUI_HOME") or Path.home() / ".cache" / "puhui").expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PUHUI_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    device: str = "cpu"            # "cpu", "cuda", "cuda:1", or "auto"
    threads: int = 0               # 0: let torch decide
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)  # PUHUI_API_KEYS=k1,k2 (or a JSON list)
    aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ALIASES))
    # sampling defaults per model, over the model's own ([sampling.MODEL] temperature = 0.3 in config.toml)
    sampling: dict[str, dict[str, float | int]] = Field(default_factory=dict)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v):
        return parse_api_keys(v)

    @property
    def store_dir(self) -> Path:
        return self.home / "models"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    def resolve(self, name: str) -> str:
        """A model alias to the real store name (unchanged when it is not an alias)."""
        return self.aliases.get(name, name)


def _from_toml(home: Path) -> dict:
    path = home / "config.toml"
    if not path.is_file():
        return {}
    with open(path, "rb") as f:
        data = tomllib.load(f)
    aliases = dict(DEFAULT_ALIASES)
    aliases.update(data.pop("aliases", {}))
    data["aliases"] = aliases
    return data


@lru_cache(maxsize=None)
def _cached(home: str) -> Settings:
    file_values = _from_toml(Path(home))
    env = Settings()  # environment wins over the file
    merged = {**file_values, **{k: v for k, v in env.model_dump().items() if k in env.model_fields_set}}
    return Settings(**merged)


def get_settings() -> Settings:
    """Settings for the current PUHUI_HOME (re-read when PUHUI_HOME changes, e.g. in tests)."""
    return _cached(str(default_home()))


def apply_threads() -> int:
    """Set torch's intra-op threads from the settings (PUHUI_THREADS; 0 leaves torch's default). Returns them."""
    import torch

    n = get_settings().threads
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()
