import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh, empty PUHUI_HOME for one test."""
    h = tmp_path / "puhui-home"
    monkeypatch.setenv("PUHUI_HOME", str(h))
    return h


def run_cli(*args: str, home: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `puhui` console entry point in a subprocess (exit codes and stderr as a user sees them)."""
    env = dict(os.environ)
    if home is not None:
        env["PUHUI_HOME"] = str(home)
    return subprocess.run([sys.executable, "-c", "from puhui.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small-model tests (threads only cost time there, a lot on a busy machine);
    use with pytestmark = pytest.mark.usefixtures("one_thread")."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
