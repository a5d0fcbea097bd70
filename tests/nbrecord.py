"""One execution per test run: nbval's execution of each notebook is also the site's.

nbval runs every chapter as a test (one pytest item per code cell), but keeps only what it needs
to compare outputs. This plugin listens to the same kernel messages and rebuilds each cell's
outputs the way a notebook client does (streams, rich displays, ``clear_output``,
``update_display_data``, errors of ``raises-exception`` cells). When every cell of a notebook has
passed, the executed notebook is stored in a jupyter-cache database with its execution time; the
site build of the same session (``build`` fixture in ``tests/conftest.py``) then renders from
that cache (``execute_notebooks: cache``) instead of executing the chapters a second time. A
notebook that failed, or was not run in the session, is simply not cached: the build then executes
it itself, and the execution-status test reports it.

Loaded from the root ``conftest.py`` so that it sees the items collected under ``notebooks/``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
_OUT = Path(os.environ.get("COURSE_NBVAL_DIR") or ROOT / "_build")
#: The jupyter-cache database of this session's executed notebooks.
CACHE_DIR = _OUT / "nbval-cache"
#: Executed copies, to read what the site will show (also what the cache holds).
EXECUTED_DIR = _OUT / "nbval-executed"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error")


@dataclass
class CellRecorder:
    """Outputs of one cell, rebuilt from its iopub messages like a notebook client does."""

    outputs: list = field(default_factory=list)
    execution_count: int | None = None
    _by_display_id: dict = field(default_factory=dict)
    _clear_on_next: bool = False

    def feed(self, msg: dict) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "execute_input":
            self.execution_count = content.get("execution_count")
        elif kind == "clear_output":
            if content.get("wait"):
                self._clear_on_next = True
            else:
                self.outputs.clear()
        elif kind == "update_display_data":
            display_id = content.get("transient", {}).get("display_id")
            for out in self._by_display_id.get(display_id, []):
                out["data"], out["metadata"] = content["data"], content.get("metadata", {})
        elif kind in OUTPUT_TYPES:
            if self._clear_on_next:
                self.outputs.clear()
                self._clear_on_next = False
            out = nbformat.v4.output_from_msg(msg)
            display_id = content.get("transient", {}).get("display_id")
            if display_id:
                self._by_display_id.setdefault(display_id, []).append(out)
            self.outputs.append(out)

    def final_outputs(self) -> list:
        """Outputs without live widgets (progress bars): a static page has no kernel to draw them."""
        kept = []
        for out in self.outputs:
            data = out.get("data", {})
            if WIDGET_VIEW in data and set(data) <= {WIDGET_VIEW, "text/plain"}:
                continue
            kept.append(out)
        return kept


@dataclass
class NotebookRun:
    path: Path
    seconds: float = 0.0
    failed: bool = False
    cells: int = 0
    cached: bool = False


#: notebook path -> its run in this pytest session
RUNS: dict[Path, NotebookRun] = {}
_current: dict = {}


def _is_nbval_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item.parent, "get_kernel_message")


def _install_listener(notebook) -> None:
    if getattr(notebook, "_nbrecord_installed", False):
        return
    original = notebook.get_kernel_message

    def listening(*args, **kwargs):
        msg = original(*args, **kwargs)
        recorder = _current.get("recorder")
        if recorder is not None and msg["parent_header"].get("msg_id") is not None:
            if _current.get("msg_id") is None and msg["msg_type"] == "execute_input":
                _current["msg_id"] = msg["parent_header"]["msg_id"]
            if msg["parent_header"].get("msg_id") == _current.get("msg_id"):
                recorder.feed(msg)
        return msg

    notebook.get_kernel_message = listening
    notebook._nbrecord_installed = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if not _is_nbval_cell(item):
        yield
        return
    _install_listener(item.parent)
    run = RUNS.setdefault(Path(str(item.parent.fspath)), NotebookRun(Path(str(item.parent.fspath))))
    recorder = CellRecorder()
    _current.update(recorder=recorder, msg_id=None)
    start = time.perf_counter()
    outcome = yield
    run.seconds += time.perf_counter() - start
    run.cells += 1
    _current.clear()
    item.cell.outputs = recorder.final_outputs()
    item.cell.execution_count = recorder.execution_count
    if outcome.excinfo is not None:
        run.failed = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if _is_nbval_cell(item) and call.when in ("setup", "call") and outcome.get_result().failed:
        RUNS.setdefault(Path(str(item.parent.fspath)),
                        NotebookRun(Path(str(item.parent.fspath)))).failed = True


def pytest_runtest_teardown(item, nextitem):
    if not _is_nbval_cell(item):
        return
    if nextitem is not None and nextitem.parent is item.parent:
        return
    path = Path(str(item.parent.fspath))
    run = RUNS.get(path)
    expected = sum(1 for c in item.parent.nb.cells if c.cell_type == "code")
    if run is None or run.failed or run.cells != expected:
        return
    store(item.parent.nb, path, run)


def store(nb, path: Path, run: NotebookRun) -> None:
    """Write the executed notebook and put it in the session's jupyter-cache."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(code_cells, start=1):  # nbval runs cells without history
        cell.execution_count = number
        for out in cell.outputs:
            if out.get("output_type") == "execute_result":
                out["execution_count"] = number
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, EXECUTED_DIR / path.name)
    cache = get_cache(str(CACHE_DIR))
    cache.cache_notebook_bundle(
        CacheBundleIn(nb, str(path), data={"execution_seconds": run.seconds, "by": "nbval"}),
        check_validity=False, overwrite=True)
    run.cached = True


def pytest_sessionstart(session):
    """Start each session from an empty cache: nothing from an older run can be rendered."""
    shutil.rmtree(CACHE_DIR, ignore_errors=True)
    shutil.rmtree(EXECUTED_DIR, ignore_errors=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)


def cached_notebooks() -> set[Path]:
    """Notebooks executed by nbval in this session, all cells passed, stored in the cache."""
    return {p for p, r in RUNS.items() if r.cached}
