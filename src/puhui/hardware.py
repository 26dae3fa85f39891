"""What this machine has: cores, memory, ISA flags, GPUs, free disk, torch."""
from __future__ import annotations

import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16",
             "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "sve")


@dataclass
class GPU:
    index: int
    name: str
    memory_bytes: int


@dataclass
class Hardware:
    os: str
    machine: str
    cpu: str
    physical_cores: int
    logical_cores: int
    ram_bytes: int
    ram_available_bytes: int
    isa: dict[str, bool]
    gpus: list[GPU] = field(default_factory=list)
    disk_free_bytes: int = 0
    disk_path: str = ""
    torch_version: str = ""
    torch_threads: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _cpu_flags() -> tuple[str, set[str]]:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Hardware") and value.strip():
            name = value.strip()
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return name, flags


def _gpus() -> list[GPU]:
    try:
        import torch
    except ImportError:
        return []
    out = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append(GPU(i, p.name, int(p.total_memory)))
    return out


def probe(disk_path: str | os.PathLike | None = None) -> Hardware:
    import psutil

    cpu, flags = _cpu_flags()
    vm = psutil.virtual_memory()
    path = Path(disk_path) if disk_path else Path.home()
    while not path.exists():
        path = path.parent
    try:
        import torch
        tv, tt = torch.__version__, torch.get_num_threads()
    except ImportError:
        tv, tt = "", 0
    return Hardware(
        os=f"{platform.system()} {platform.release()}",
        machine=platform.machine(),
        cpu=cpu,
        physical_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_bytes=int(vm.total),
        ram_available_bytes=int(vm.available),
        isa={f: f in flags for f in ISA_FLAGS},
        gpus=_gpus(),
        disk_free_bytes=int(shutil.disk_usage(path).free),
        disk_path=str(path),
        torch_version=tv,
        torch_threads=tt,
    )
