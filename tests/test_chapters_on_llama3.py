"""Every chapter executed with ``COURSE_MODEL`` pointing at the Llama 3 stand-in.

The default run (nbval over ``notebooks/``) proves the course on the bundled SmolLM2. This run
proves the path a learner takes with a real Llama 3.x GGUF: each chapter must execute without an
error, and what it computes *about the model* must be the stand-in's (its name in the outputs,
never SmolLM2's vocabulary). Claims about behaviour that only the bundled model was checked on are
printed as such by ``course_utils.gating`` instead of failing.

The executed notebooks are kept in ``_build/standin/`` to read what the learner would see.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import nbformat
import pytest

from course_utils import standin

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
OUT = ROOT / "_build" / "standin"
#: SmolLM2's vocabulary size, in any of the ways a page may print it.
SMOLLM2_VOCAB = re.compile(r"49[ ,.\u202f\u00a0_]?152")


@pytest.fixture(scope="module")
def standin_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("course-cache")
    path = standin.standin_path("tied", folder=cache / "standin")
    return {"COURSE_MODEL": str(path), "COURSE_CACHE": str(cache)}


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append(out["text"])
            for key in ("text/plain", "text/html", "text/markdown"):
                if key in out.get("data", {}):
                    parts.append(out["data"][key])
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_runs_on_the_llama3_standin(path, standin_env, monkeypatch):
    from nbclient import NotebookClient

    for key, value in standin_env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        OUT.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, OUT / path.name)
        print(f"{path.stem}: {time.perf_counter() - start:.0f} s con el stand-in")
    text = _outputs_text(nb)
    label = standin.VARIANTS["tied"].name
    assert label in text or Path(standin_env["COURSE_MODEL"]).name in text, (
        f"{path.name} never names the model it loaded (the stand-in)")
    smol = SMOLLM2_VOCAB.findall(text)
    assert not smol, f"{path.name} prints SmolLM2's vocabulary size under COURSE_MODEL: {smol}"
