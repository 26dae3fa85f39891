"""What a benchmark ran on, recorded in every bench/results/*.json: numbers from different CPUs differ a lot
(AVX2 against AVX-512 with AMX changes torch's int4 and bfloat16 kernels most of all)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def machine() -> dict:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        import torch
        torch_version, threads = torch.__version__, torch.get_num_threads()
    except ImportError:
        torch_version = threads = None
    return {"cpu": name, "isa": [f for f in FLAGS if f in flags], "cores": os.cpu_count(),
            "loadavg": os.getloadavg(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch_version, "torch_threads": threads}


def describe(m: dict) -> str:
    """One line: 'Intel Xeon ..., 2 cores, avx2 avx512f ... (load 0.5)'."""
    return f"{m['cpu']}, {m['cores']} cores, {' '.join(m['isa']) or 'no AVX2'} (load {m['loadavg'][0]:.1f})"
