"""Chapters that need transformers on Colab install the pinned version (Colab's own differs)."""

import json
from pathlib import Path

import pytest

from course_utils import colab

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
#: What in a notebook's code means it runs transformers: a direct import, or the course helpers
#: that build a transformers model (``course_utils.finetune``'s torch loaders and trainers).
NEEDS_TRANSFORMERS = ("import transformers", "from transformers", "load_torch_model_from_gguf",
                      "load_torch_from_gguf", "load_tokenizer_from_gguf", "train_lora_")


def _code(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


USING_TRANSFORMERS = [p for p in NOTEBOOKS if any(m in _code(p) for m in NEEDS_TRANSFORMERS)]


def test_the_chapters_that_train_or_load_torch_models_are_found():
    names = {p.name for p in USING_TRANSFORMERS}
    assert {"06_fine_tuning_lora.ipynb", "08_evaluacion_compresion_y_servicio.ipynb"} <= names


@pytest.mark.parametrize("path", USING_TRANSFORMERS, ids=lambda p: p.name)
def test_chapters_using_transformers_pin_it_on_colab(path):
    pinned = colab.pins()["transformers"]
    assert pinned in colab.install_cell_source(notebook=path.name)


def test_chapter_08_pins_transformers():
    assert colab.pins()["transformers"] in colab.install_cell_source(
        notebook="08_evaluacion_compresion_y_servicio.ipynb")
