"""The repository's rules: clean notebooks, one source of truth, every chapter in the book."""

import json
import re
from pathlib import Path

import pytest
import yaml

from course_utils import colab

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_badge_and_install_cell_match_the_single_sources(path):
    assert colab.notebook_problems(path) == [], "run: python -m course_utils.colab"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_is_the_first_code_cell(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert colab.INSTALL_MARKER in "".join(first["source"])


def _pip_requirements(source: str) -> list[str]:
    """Every requirement named on the ``%pip install`` lines of a cell (continuations joined)."""
    code = "\n".join(line.split("#")[0].rstrip() for line in source.splitlines())
    code = code.replace("\\\n", " ")
    reqs = []
    for line in code.splitlines():
        if "%pip install" in line:
            args = line.split("%pip install", 1)[1].split()
            reqs += [a.strip('"') for a in args if not a.startswith("-")]
    return reqs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_never_installs_torch(path):
    reqs = _pip_requirements(colab.install_cell_source(notebook=path.name))
    assert reqs and not [r for r in reqs if re.match(r"torch\b", r)], reqs


def test_chapter_06_installs_the_trl_stack_and_unsloth_only_with_a_gpu():
    source = colab.install_cell_source(notebook="06_fine_tuning_lora.ipynb")
    reqs = _pip_requirements(source)
    gpu = colab.pins(filename="requirements-gpu.txt")
    for name in ("trl", "peft", "transformers"):
        assert colab.pins()[name] in reqs
    assert gpu["unsloth"] in reqs
    assert source.index("torch.cuda.is_available()") < source.index(gpu["unsloth"])
    assert "unsloth" not in colab.install_cell_source(notebook="01_que_es_llama3.ipynb")


def test_repository_url_is_written_in_one_place():
    url, _ = colab.repository()
    files = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in {".py", ".md", ".toml", ".txt", ".yml", ".cfg"}
             and not any(part in {".venv", "_build", ".git"} for part in p.parts)]
    holders = [p.relative_to(ROOT).as_posix() for p in files if url in p.read_text(encoding="utf-8", errors="ignore")]
    assert holders == ["_config.yml"], holders


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))

    def files(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for v in node.values():
                yield from files(v)
        elif isinstance(node, list):
            for v in node:
                yield from files(v)

    entries = {toc["root"], *files(toc)}
    for entry in entries:
        assert any((ROOT / f"{entry}{ext}").is_file() for ext in (".md", ".ipynb")), entry
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in entries, f"{nb.name} is not in _toc.yml"


def test_notebooks_use_the_course_kernel_name():
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert nb["metadata"]["kernelspec"]["name"] == "python3", path.name


def _markdown_sources():
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "markdown":
                yield f"{path.name} cell {i}", "".join(cell["source"])
    for path in sorted((ROOT / "book").glob("*.md")):
        yield path.name, path.read_text(encoding="utf-8")


def test_no_backtick_fenced_directive_has_a_backtick_in_its_title():
    # CommonMark forbids backticks in the info string of a backtick fence: such a
    # "directive" is printed as plain text. Use a colon fence (:::{admonition}) instead.
    bad = []
    for where, source in _markdown_sources():
        for line in source.splitlines():
            stripped = line.lstrip()
            if stripped.startswith("```") and "{" in stripped:
                info = stripped.lstrip("`")
                if info.startswith("{") and "`" in info:
                    bad.append(f"{where}: {stripped}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_has_the_course_structure(path):
    """Title, objectives, CPU/GPU admonition, exercise with a folded solution, reflection
    questions and key concepts linked to the glossary."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith(f"# {int(path.name[:2])} · "), "title '# N · ...' first"
    assert "\n- " in first, "objectives as a list in the first cell"
    assert "{admonition} Se ejecuta en CPU" in first or "{admonition} Necesita GPU" in first
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    for heading in ("## Ejercicio", "## Preguntas para reflexionar", "## Conceptos clave"):
        assert heading in markdown, heading
    concepts = markdown.split("## Conceptos clave", 1)[1]
    assert "{term}`" in concepts, "key concepts link to the glossary"
    solutions = [c for c in nb["cells"] if c["cell_type"] == "code"
                 and "hide-input" in c["metadata"].get("tags", [])]
    assert solutions, "an exercise solution folded with the hide-input tag"


def test_the_course_has_eight_chapters_in_the_toc_in_order():
    """Chapters 01-08, numbered without gaps, listed in _toc.yml in the same order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    listed = [c["file"] for part in toc["parts"] for c in part["chapters"]
              if c["file"].startswith("notebooks/")]
    assert listed == [f"notebooks/{nb.stem}" for nb in NOTEBOOKS]
    assert [nb.name[:2] for nb in NOTEBOOKS] == [f"{n:02d}" for n in range(1, 9)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercise_self_checks_exist_and_solutions_fold_in_jupyter(path):
    """Every cu.exercises.check("name", ...) names a registered check; every solution folded on
    the site (hide-input) is folded in JupyterLab and Colab too (source_hidden)."""
    from course_utils import exercises

    nb = json.loads(path.read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    names = {m for src in code for m in re.findall(r"exercises\.check\(\s*[\"']([^\"']+)", src)}
    assert names, "no exercise self-check"
    assert names <= set(exercises._CHECKS), names - set(exercises._CHECKS)
    for cell in nb["cells"]:
        if "hide-input" in cell["metadata"].get("tags", []):
            assert cell["metadata"].get("jupyter", {}).get("source_hidden") is True, cell["id"]
