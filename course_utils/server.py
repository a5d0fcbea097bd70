"""llama-cpp-python's OpenAI-compatible server, started and *always* stopped from Python.

``python -m llama_cpp.server`` (installed with ``llama-cpp-python[server]``) serves a GGUF with
the same HTTP API as OpenAI (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``...),
so any OpenAI client talks to the local model by changing ``base_url``.

:class:`LocalServer` runs it as a child process on the loopback interface only, waits until it
answers, and stops it three ways: ``with`` block / :meth:`LocalServer.stop`, at interpreter exit
(``atexit``), and — on Linux — when the parent process dies abruptly (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import CourseError

LOOPBACK = ("127.0.0.1", "localhost")


class ServerError(CourseError, RuntimeError):
    """The local server could not start or answer."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody is listening on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to send SIGTERM to this child when its parent dies (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def server_command(model_path: str | os.PathLike, host: str, port: int, *, n_ctx: int,
                   n_threads: int, chat_format: str | None = None) -> list[str]:
    """The command line that starts llama-cpp-python's server."""
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path),
           "--host", host, "--port", str(port), "--n_ctx", str(n_ctx),
           "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads)]
    if chat_format:
        cmd += ["--chat_format", chat_format]
    return cmd


class LocalServer:
    """An OpenAI-compatible server for a local GGUF, on ``127.0.0.1`` by default.

    Use it as a context manager so it stops even when the code inside fails::

        with LocalServer(path) as server:
            client = OpenAI(base_url=server.base_url, api_key="local")
            ...
    """

    def __init__(self, model_path: str | os.PathLike, *, host: str = "127.0.0.1",
                 port: int | None = None, n_ctx: int = 2048, n_threads: int | None = None,
                 chat_format: str | None = None, startup_timeout: float = 60.0,
                 allow_remote: bool = False):
        from .models import default_n_threads, validate_gguf

        if host not in LOOPBACK and not allow_remote:
            raise ServerError(
                f"host={host!r} expondría el modelo a otras máquinas de la red. En el curso el "
                "servidor escucha solo en 127.0.0.1; si de verdad quieres otra interfaz, pasa "
                "allow_remote=True (y protégelo: este servidor no tiene contraseña por defecto)."
            )
        self.model_path = validate_gguf(model_path)
        self.host = host
        self.port = port or free_port(host)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_n_threads()
        self.chat_format = chat_format
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._log = None

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """What an OpenAI client needs: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "LocalServer":
        """Start the server and wait until ``/v1/models`` answers (or fail with its log)."""
        if self.running:
            return self
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log",
                                                delete=False)
        cmd = server_command(self.model_path, self.host, self.port, n_ctx=self.n_ctx,
                             n_threads=self.n_threads, chat_format=self.chat_format)
        self.process = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_tail()
                self.stop()
                raise ServerError(
                    f"El servidor terminó al arrancar (código {self.process.returncode}). "
                    f"Últimas líneas de su registro:\n{log}\n¿Está instalado "
                    "llama-cpp-python[server]? (pip install 'llama-cpp-python[server]')"
                )
            try:
                self.get("/models", timeout=1.0)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.2)
        log = self.log_tail()
        self.stop()
        raise ServerError(
            f"El servidor no respondió en {self.startup_timeout:.0f} s en {self.base_url}. "
            f"Registro:\n{log}"
        )

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``grace`` seconds). Safe to call twice."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
        atexit.unregister(self.stop)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- helpers -----------------------------------------------------------------------
    def log_tail(self, lines: int = 15) -> str:
        if self._log is None:
            return ""
        text = Path(self._log.name).read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def get(self, path: str, timeout: float = 10.0) -> dict:
        """GET ``base_url + path`` and decode the JSON answer (standard library only)."""
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def port_open(self) -> bool:
        """Whether something accepts TCP connections on the server's port."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex((self.host, self.port)) == 0

    def __repr__(self) -> str:
        state = f"pid {self.process.pid}" if self.running else "parado"
        return f"LocalServer({self.model_path.name}, {self.base_url}, {state})"
