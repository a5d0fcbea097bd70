"""The book builds with no warnings, executing every notebook (the same command as `make site`).

The `build` fixture (tests/conftest.py) builds the site once per session; the browser tests
(tests/test_site_browser.py) check the same build.
"""

import re
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_book_builds_without_warnings(build):
    if build.returncode is None:
        pytest.skip(f"se reutiliza un sitio ya construido ({build.html}): no hay registro de "
                    "construcción que comprobar")
    assert build.returncode == 0, build.log[-5000:]
    assert not re.search(r"\bWARNING:|\bERROR:", build.log), build.log[-5000:]  # Sphinx warnings, not kernel chatter


def test_chapter_01_renders_with_outputs_and_figures(build):
    html = (build.html / "notebooks/01_que_es_llama3.html").read_text(encoding="utf-8")
    assert "cell_output" in html
    assert html.count("<img") >= 2, "expected the chapter's plots in the page"
    assert "ModelNotFoundError" in html  # the expected-exception cell shows its error
    assert "colab.research.google.com" in html  # launch button / badge


def test_site_pages_exist(build):
    for page in ("index.html", "book/intro.html", "book/instalacion.html", "book/glosario.html",
                 "book/referencias.html", "book/estado_de_ejecucion.html",
                 "notebooks/02_tokens.html", "notebooks/03_formato_de_prompts.html",
                 "notebooks/04_parametros_de_generacion.html", "notebooks/05_cuantizacion.html",
                 "notebooks/06_fine_tuning_lora.html",
                 "notebooks/07_rendimiento_y_contexto.html",
                 "notebooks/08_evaluacion_compresion_y_servicio.html"):
        assert (build.html / page).is_file(), page


def test_chapter_02_renders_the_token_view_and_chart(build):
    html = (build.html / "notebooks/02_tokens.html").read_text(encoding="utf-8")
    assert html.count('title="id ') > 100  # coloured token boxes with ids on hover
    assert "dashed" in html  # partial-byte tokens (emoji) are marked
    assert html.count("<img") >= 2  # Colab badge + words-per-token chart


def test_execution_status_page_lists_every_notebook_as_executed(build):
    """book/estado_de_ejecucion.md: myst-nb's table has one row per notebook, all succeeded."""
    soup = BeautifulSoup((build.html / "book/estado_de_ejecucion.html").read_text(encoding="utf-8"),
                         "html.parser")
    tables = soup.select("article table")
    assert len(tables) == 1, "the {nb-exec-table} directive did not render a table"
    header = [th.get_text(strip=True) for th in tables[0].select("thead th")]
    assert header == ["Document", "Modified", "Method", "Run Time (s)", "Status"], header
    rows = {}
    for tr in tables[0].select("tbody tr"):
        cells = [td.get_text(strip=True) for td in tr.find_all("td")]
        rows[cells[0]] = cells
    assert set(rows) == {f"notebooks/{nb.stem}" for nb in NOTEBOOKS}, sorted(rows)
    # "force": executed by this build (make site); "cache": rendered from this session's nbval
    # execution (make test), which tests/nbrecord.py stores in a cache emptied at session start.
    expected = "cache" if build.from_nbval else "force"
    for doc, (_, _, method, runtime, status) in rows.items():
        assert status == "✅", f"{doc} failed to execute: {rows[doc]}"
        assert method == expected, rows[doc]
        assert float(runtime) > 0, rows[doc]


def test_each_notebook_is_executed_once_per_test_run(build):
    """make test: nbval executes each chapter (as the test) and the site renders that execution."""
    from tests import nbrecord

    ran = {p for p, run in nbrecord.RUNS.items()}
    if not set(NOTEBOOKS) <= ran:
        pytest.skip("nbval no ejecutó todos los capítulos en esta sesión (prueba parcial): el "
                    "sitio los ejecuta él mismo")
    failed = sorted(p.name for p, run in nbrecord.RUNS.items() if not run.cached)
    assert not failed, f"nbval no completó estos capítulos: {failed}"
    assert build.from_nbval
    executed_by_build = re.findall(r"Executing notebook", build.log)
    cached = re.findall(r"Using cached notebook", build.log)
    assert not executed_by_build, "the site build executed notebooks a second time"
    assert len(cached) == len(NOTEBOOKS), build.log[-3000:]
