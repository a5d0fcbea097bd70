import subprocess
import sys

from course_utils.__main__ import main, report


def test_report_sections(no_network, clean_env):
    text, problems = report()
    for section in ("== Tu equipo ==", "== Modelo que usará el curso ==", "== Versiones ==",
                    "== Problemas =="):
        assert section in text
    assert "llama-cpp-python" in text and "Por qué" in text
    assert problems == []


def test_report_flags_a_bad_model(no_network, clean_env, capsys):
    assert main(["--model", "no-existe.gguf"]) == 1
    assert "No encuentro el modelo" in capsys.readouterr().out


def test_report_flags_too_little_ram(no_network, clean_env, monkeypatch):
    from course_utils import __main__ as cli
    from tests.conftest import TINY_ONLINE

    monkeypatch.setattr(cli, "detect_hardware", lambda check_online_now=False: TINY_ONLINE)
    text, problems = report(model="llama-3.1-8b-instruct")
    assert any("RAM libre" in p for p in problems)
    assert any("necesita" in p for p in problems)


def test_module_runs_as_a_command(clean_env):
    out = subprocess.run([sys.executable, "-m", "course_utils"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Listo para empezar" in out.stdout


def test_documented_one_liner_works_offline(clean_env):
    """The README's smoke test, in a fresh interpreter with the Hub marked offline."""
    code = "import course_utils as cu; print(cu.load_llm()('Hola', max_tokens=8))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'finish_reason'" in out.stdout


def test_bench_runs_as_a_subcommand_without_runpy_warning():
    """`make bench` = `python -m course_utils bench`: no 'found in sys.modules' RuntimeWarning."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "course_utils",
                           "bench", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr and "--chapters" in proc.stdout


def test_bench_executes_a_notebook_without_kernel_warnings(tmp_path):
    """Timing a chapter prints nothing alarming: no ipykernel warning about unencrypted TCP, no
    'parent appears to have exited' (the kernel is shut down by us)."""
    import subprocess
    import sys

    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 6 * 7\nassert x == 42")]
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    code = ("from pathlib import Path; from course_utils.bench import notebook_time; "
            f"s, status = notebook_time(Path({str(path)!r})); print(status)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert "WARNING" not in proc.stderr and "encryption" not in proc.stderr, proc.stderr


def test_bench_budget_table_flags_chapters_and_total_over_budget():
    from course_utils.bench import budget_table

    table = budget_table({"01_x.ipynb": (149.0, "ok"), "06_y.ipynb": (181.0, "ok"),
                          "07_z.ipynb": (300.0, "ok")})
    lines = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert lines["01_x.ipynb"].endswith("dentro")
    assert lines["06_y.ipynb"].endswith("FUERA")  # chapter 06's budget is 180 s
    assert "630.0" in lines["TOTAL"] and lines["TOTAL"].endswith("FUERA")


def test_bench_budgets_cover_the_eight_chapters():
    from pathlib import Path

    from course_utils.bench import COURSE_BUDGET, chapter_budget

    notebooks = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
    assert [p.name[:2] for p in notebooks] == [f"{n:02d}" for n in range(1, 9)]
    assert chapter_budget(Path("07_rendimiento_y_contexto.ipynb")) == 150
    assert chapter_budget(Path("08_evaluacion_compresion_y_servicio.ipynb")) == 150
    assert chapter_budget(Path("06_fine_tuning_lora.ipynb")) == 180
    assert COURSE_BUDGET == 600
