"""The book builds with no warnings, executing every notebook (the same command as `make site`)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JB = Path(sys.executable).with_name("jupyter-book")


@pytest.fixture(scope="module")
def build():
    assert JB.exists(), f"jupyter-book no está instalado junto a {sys.executable}"
    proc = subprocess.run(
        [str(JB), "build", str(ROOT), "--warningiserror", "--keep-going"],
        capture_output=True, text=True, timeout=3000,
    )
    return proc


def test_book_builds_without_warnings(build):
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-5000:]
    assert not re.search(r"\bWARNING:|\bERROR:", log), log[-5000:]  # Sphinx warnings, not kernel chatter


def test_chapter_01_renders_with_outputs_and_figures(build):
    html = (ROOT / "_build/html/notebooks/01_que_es_llama3.html").read_text(encoding="utf-8")
    assert "cell_output" in html
    assert html.count("<img") >= 2, "expected the chapter's plots in the page"
    assert "ModelNotFoundError" in html  # the expected-exception cell shows its error
    assert "colab.research.google.com" in html  # launch button / badge


def test_site_pages_exist(build):
    for page in ("index.html", "book/intro.html", "book/instalacion.html", "book/glosario.html",
                 "notebooks/02_tokens.html", "notebooks/03_formato_de_prompts.html",
                 "notebooks/04_parametros_de_generacion.html", "notebooks/05_cuantizacion.html",
                 "notebooks/06_fine_tuning_lora.html"):
        assert (ROOT / "_build/html" / page).is_file(), page


def test_chapter_02_renders_the_token_view_and_chart(build):
    html = (ROOT / "_build/html/notebooks/02_tokens.html").read_text(encoding="utf-8")
    assert html.count('title="id ') > 100  # coloured token boxes with ids on hover
    assert "dashed" in html  # partial-byte tokens (emoji) are marked
    assert html.count("<img") >= 2  # Colab badge + words-per-token chart
