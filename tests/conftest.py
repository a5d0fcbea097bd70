"""Shared fixtures: simulated machines, a guard that fails any test touching the network, and the
executed website (built once per session)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from course_utils.hardware import GIB, GpuInfo, HardwareInfo

ROOT = Path(__file__).resolve().parent.parent
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")

# Simulated hardware profiles for the model ladder's decisions.
CPU_8GB = HardwareInfo(
    system="Linux", machine="x86_64", python="3.11.7", cpu_physical=4, cpu_logical=8,
    ram_total=8 * GIB, ram_available=6 * GIB, online=True,
)
COLAB_T4 = HardwareInfo(
    system="Linux", machine="x86_64", python="3.12.0", cpu_physical=1, cpu_logical=2,
    ram_total=13 * GIB, ram_available=11 * GIB, colab=True, online=True,
    gpu=GpuInfo(name="Tesla T4", vram_total=15 * GIB, vram_free=int(14.7 * GIB)),
)
OFFLINE_LAPTOP = CPU_8GB.with_changes(online=False)
TINY_ONLINE = CPU_8GB.with_changes(ram_total=4 * GIB, ram_available=int(1.5 * GIB))
APPLE_M2 = CPU_8GB.with_changes(system="Darwin", machine="arm64", metal=True, ram_total=16 * GIB,
                                ram_available=10 * GIB)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a TCP connection fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)


@pytest.fixture
def clean_env(monkeypatch):
    """No course variables from the caller's environment leak into a test."""
    for var in ("COURSE_MODEL", "COURSE_ALLOW_DOWNLOAD", "COURSE_OFFLINE", "HF_HUB_OFFLINE",
                "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def gpu_build(monkeypatch):
    """Pretend this llama-cpp-python build can offload to a GPU (as a CUDA/Metal build does)."""
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)


# --- The executed website, built once per test session -------------------------------------------
# One execution per test run: when nbval has executed every notebook in this session (all cells
# passed), tests/nbrecord.py has stored the executed notebooks in a jupyter-cache, and the site is
# rendered from it (execute_notebooks: cache) — the chapters are not executed a second time. If a
# notebook was not run or failed, the build executes it itself (``make site`` always executes
# everything). Set COURSE_SITE_HTML to an already built `_build/html` folder to check that site
# instead of building (quick iteration on the browser tests); the build-log test then skips.
SITE_ENV = "COURSE_SITE_HTML"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@dataclass
class SiteBuild:
    html: Path                 # the folder with index.html
    returncode: int | None     # None when the site was reused, not built in this session
    log: str
    from_nbval: bool = False   # rendered from this session's nbval execution (not re-executed)


def _config_from_nbval_cache() -> Path:
    """_config.yml, but rendering from the cache that nbval filled in this session."""
    import yaml

    from tests import nbrecord

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config.setdefault("execute", {}).update(execute_notebooks="cache", cache=str(nbrecord.CACHE_DIR))
    path = nbrecord.CACHE_DIR.parent / "nbval-config.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def build() -> SiteBuild:
    """The site, built once per session: from nbval's execution when it covered every chapter."""
    from tests import nbrecord

    reused = os.environ.get(SITE_ENV)
    if reused:
        html = Path(reused).resolve()
        if not (html / "index.html").is_file():
            pytest.fail(f"{SITE_ENV}={reused} no contiene un sitio construido (falta index.html)")
        return SiteBuild(html=html, returncode=None, log="")
    assert JUPYTER_BOOK.exists(), f"jupyter-book no está instalado junto a {sys.executable}"
    from_nbval = nbrecord.cached_notebooks() >= set(NOTEBOOKS)
    command = [str(JUPYTER_BOOK), "build", str(ROOT), "--warningiserror", "--keep-going"]
    if from_nbval:
        command += ["--config", str(_config_from_nbval_cache())]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=3000)
    return SiteBuild(html=ROOT / "_build" / "html", returncode=proc.returncode,
                     log=proc.stdout + proc.stderr, from_nbval=from_nbval)
