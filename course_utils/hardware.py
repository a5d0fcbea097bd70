"""What machine is this? CPU cores, RAM, GPU (CUDA / Apple Metal), Colab, network.

``detect_hardware()`` returns a :class:`HardwareInfo` record. Nothing here needs torch or a
network connection: torch is used for the CUDA query only when it is importable (``nvidia-smi``
otherwise) and the network is only probed when you ask for it (``check_online=True``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, replace

import psutil

GIB = 1024**3

#: Environment variables that mean "do not use the network" (ours and Hugging Face's).
OFFLINE_ENV_VARS = ("COURSE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
#: Host probed by ``check_online=True``: the one the opt-in models come from.
ONLINE_PROBE = ("huggingface.co", 443)


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device."""

    name: str
    vram_total: int  #: bytes
    vram_free: int | None = None  #: bytes, when known
    #: CUDA compute capability ``(major, minor)``, e.g. ``(7, 5)`` on a T4, when known (via torch):
    #: native bfloat16 needs ``>= (8, 0)``.
    compute_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class HardwareInfo:
    """A snapshot of the machine the course runs on."""

    system: str  #: ``Linux``, ``Darwin``, ``Windows``
    machine: str  #: ``x86_64``, ``arm64``...
    python: str
    cpu_physical: int  #: physical cores (what llama.cpp should use as threads)
    cpu_logical: int  #: logical CPUs (hyper-threads counted)
    ram_total: int  #: bytes
    ram_available: int  #: bytes
    gpu: GpuInfo | None = None  #: CUDA GPU, if any
    metal: bool = False  #: Apple Silicon GPU (Metal)
    colab: bool = False  #: running inside Google Colab
    online: bool | None = None  #: ``None`` = not checked (the default never touches the network)

    @property
    def accelerator(self) -> str:
        """``"cuda"``, ``"metal"`` or ``"cpu"``."""
        if self.gpu is not None:
            return "cuda"
        return "metal" if self.metal else "cpu"

    @property
    def model_memory(self) -> int:
        """Bytes a model can use: VRAM on a CUDA GPU, otherwise available RAM (Metal shares it)."""
        if self.gpu is not None:
            return self.gpu.vram_free if self.gpu.vram_free is not None else self.gpu.vram_total
        return self.ram_available

    def with_changes(self, **changes) -> "HardwareInfo":
        """A copy with some fields changed (handy to simulate other machines)."""
        return replace(self, **changes)

    def summary(self) -> str:
        """A short report in Spanish, one fact per line."""
        gpu = "ninguna"
        if self.gpu is not None:
            gpu = f"{self.gpu.name} ({self.gpu.vram_total / GIB:.1f} GiB VRAM)"
        elif self.metal:
            gpu = "Apple Silicon (Metal, memoria unificada)"
        online = {None: "no comprobada", True: "sí", False: "no"}[self.online]
        lines = [
            f"Sistema:        {self.system} {self.machine}, Python {self.python}",
            f"CPU:            {self.cpu_physical} núcleos físicos, {self.cpu_logical} lógicos",
            f"RAM:            {self.ram_total / GIB:.1f} GiB en total, "
            f"{self.ram_available / GIB:.1f} GiB disponibles",
            f"GPU:            {gpu}",
            f"Acelerador:     {self.accelerator}",
            f"Google Colab:   {'sí' if self.colab else 'no'}",
            f"Conexión a internet: {online}",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def physical_cores() -> int:
    """Physical CPU cores usable by this process (at least 1).

    psutil counts physical cores; a container or ``taskset`` may allow fewer CPUs than that,
    so the count is capped by the CPUs this process may run on.
    """
    logical = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        usable = logical
    return max(1, min(physical, usable))


def in_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def offline_forced(env: os._Environ | dict | None = None) -> bool:
    """True when an environment variable says not to use the network."""
    env = os.environ if env is None else env
    return any(env.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in OFFLINE_ENV_VARS)


def check_online(timeout: float = 2.0) -> bool:
    """Try a TCP connection to the Hugging Face Hub. Never called unless asked for."""
    if offline_forced():
        return False
    try:
        with socket.create_connection(ONLINE_PROBE, timeout=timeout):
            return True
    except OSError:
        return False


def _gpu_from_torch() -> GpuInfo | None:
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        free, _total = torch.cuda.mem_get_info(0)
        major, minor = torch.cuda.get_device_capability(0)
        return GpuInfo(name=props.name, vram_total=int(props.total_memory), vram_free=int(free),
                       compute_capability=(int(major), int(minor)))
    except Exception:  # a broken CUDA install must not break the report
        return None


def _gpu_from_nvidia_smi() -> GpuInfo | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()
        name, total, free = (x.strip() for x in out[0].split(","))
        return GpuInfo(name=name, vram_total=int(total) * 1024**2, vram_free=int(free) * 1024**2)
    except Exception:
        return None


def detect_gpu() -> GpuInfo | None:
    """The first CUDA GPU, via torch when importable, else ``nvidia-smi``; ``None`` if none."""
    return _gpu_from_torch() or _gpu_from_nvidia_smi()


def _is_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


@functools.lru_cache(maxsize=None)
def _static_facts() -> tuple:
    return (platform.system(), platform.machine(), platform.python_version(), physical_cores(),
            os.cpu_count() or 1, detect_gpu(), _is_apple_silicon())


def detect_hardware(check_online_now: bool = False, refresh: bool = False) -> HardwareInfo:
    """Describe this machine. RAM is read fresh each call; CPU/GPU facts are cached.

    ``check_online_now=True`` probes the network (a TCP connection to the Hub); by default the
    network is not touched and ``online`` is ``None`` (``False`` if an offline variable is set).
    """
    if refresh:
        _static_facts.cache_clear()
    system, machine, python, phys, logical, gpu, metal = _static_facts()
    mem = psutil.virtual_memory()
    online: bool | None = False if offline_forced() else None
    if check_online_now:
        online = check_online()
    return HardwareInfo(
        system=system, machine=machine, python=python,
        cpu_physical=phys, cpu_logical=logical,
        ram_total=int(mem.total), ram_available=int(mem.available),
        gpu=gpu, metal=metal, colab=in_colab(), online=online,
    )
