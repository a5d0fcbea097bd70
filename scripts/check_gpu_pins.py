"""Do the packages of the Colab GPU session resolve together? pip's resolver decides.

On a Colab session with a CUDA GPU, chapter 06's install cell installs the course's pins from
``requirements.txt`` (trl, datasets, transformers...) and then Unsloth from
``requirements-gpu.txt``, on top of Colab's own torch. Unsloth's metadata caps several of those
(``trl<=1.15.0``, ``datasets<5.0.0``, ``torch<2.15``...): if a pin moves past a cap, Colab breaks
while every CPU test still passes. This script asks pip to install that whole set at once, with
torch fixed to the version Colab has (by default the one ``requirements.txt`` pins), as a dry run:
nothing is installed, and pip fails on any conflict.

    python scripts/check_gpu_pins.py                      # the set of the install cells
    python scripts/check_gpu_pins.py --set trl==1.16.0    # what if trl were 1.16.0?
    python scripts/check_gpu_pins.py --torch 2.12.0       # against another torch

It needs PyPI (CI has it) and pip >= 23.0 (``--report``); ``.ci/run`` runs it with a recent pip
in a throwaway virtual environment before ``make test``. By default pip reads each wheel's
metadata with HTTP range requests (``--use-feature=fast-deps``) instead of downloading wheels
that PyPI does not describe separately (``--no-fast-deps`` to turn it off). Exit status: 0 when
the set resolves with every pin kept, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Versions printed after a successful resolution (the ones Unsloth constrains).
WATCHED = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "unsloth",
           "unsloth-zoo", "bitsandbytes", "triton", "xformers")


def load_colab(root: Path = ROOT):
    """``course_utils/colab.py`` alone: the package's ``__init__`` needs psutil and friends, and
    this check runs in a bare virtual environment."""
    spec = importlib.util.spec_from_file_location("_course_colab", root / "course_utils" / "colab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def canonical(name: str) -> str:
    """PEP 503 name: ``unsloth_zoo`` and ``Unsloth-Zoo`` are the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_pin(requirement: str) -> tuple[str, str]:
    """``("llama-cpp-python", "0.3.36")`` from ``"llama-cpp-python[server]==0.3.36"``."""
    m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)$", requirement)
    if not m:
        raise ValueError(f"No es un requisito fijado con ==: {requirement!r}")
    return canonical(m.group(1)), m.group(2)


def gpu_sets(root: Path = ROOT, overrides: dict[str, str] | None = None) -> dict[str, list[str]]:
    """``{notebook: requirements}`` for every notebook whose install cell adds GPU packages.

    The course's own package comes from this checkout (same ``pyproject.toml`` as the
    repository the cell installs it from); ``overrides`` (``{name: "name==version"}``) replaces
    pins, to ask "what if".
    """
    colab = load_colab(root)
    overrides = {canonical(k): v for k, v in (overrides or {}).items()}
    sets = {}
    for notebook in sorted(colab.GPU_PACKAGES):
        reqs = colab.colab_requirements(notebook, gpu=True, root=root)
        reqs = [overrides.get(split_pin(r)[0], r) for r in reqs]
        names = {split_pin(r)[0] for r in reqs}
        reqs += [r for k, r in overrides.items() if k not in names]
        sets[notebook] = reqs + [f"course-utils @ {root.as_uri()}"]
    return sets


def torch_constraint(root: Path = ROOT, version: str | None = None) -> str:
    """``torch==X``: Colab's torch is never reinstalled, so the set must accept it as it is."""
    if version:
        return f"torch=={version}"
    return load_colab(root).pins(root)["torch"]


def pip_command(requirements: list[str], constraints: Path, report: Path,
                fast_deps: bool = True, python: str = sys.executable) -> list[str]:
    cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed",
           "--disable-pip-version-check", "--report", str(report), "--constraint", str(constraints)]
    if fast_deps:
        cmd.append("--use-feature=fast-deps")
    return cmd + list(requirements)


def pins_not_kept(requirements: list[str], report: dict) -> list[str]:
    """Pins the resolution did not honour (empty when all were kept)."""
    resolved = {canonical(item["metadata"]["name"]): item["metadata"]["version"]
                for item in report.get("install", [])}
    problems = []
    for requirement in requirements:
        if "==" not in requirement or " @ " in requirement:
            continue
        name, version = split_pin(requirement)
        got = resolved.get(name)
        if got is None or got.split("+", 1)[0] != version:
            problems.append(f"{requirement}: pip eligió {got or 'nada'}")
    return problems


def pip_diagnosis(output: str) -> str:
    """The lines of pip's output that say what failed: its errors and, for a conflict, which
    requirements caused it (not the progress lines nor build backends' warnings)."""
    lines, keep = [], False
    for line in output.splitlines():
        if line.startswith("The conflict is caused by"):
            keep = True
        elif line.startswith("To fix this") or line.startswith("Additionally, some packages"):
            keep = False
        if keep or line.startswith("ERROR:"):
            lines.append(line)
    lines = [line for line in lines if line.strip()]
    return "\n".join(lines[-40:]) or "\n".join(output.splitlines()[-25:])


def check(notebook: str, requirements: list[str], torch: str, fast_deps: bool = True,
          runner=subprocess.run) -> tuple[bool, str]:
    """Run pip's resolver over one set. Returns ``(ok, message in Spanish)``."""
    with tempfile.TemporaryDirectory(prefix="gpu-pins-") as tmp:
        constraints, report = Path(tmp) / "constraints.txt", Path(tmp) / "report.json"
        constraints.write_text(torch + "\n", encoding="utf-8")
        cmd = pip_command(requirements, constraints, report, fast_deps)
        start = time.perf_counter()
        proc = runner(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            return False, (
                f"✘ {notebook}: pip no puede instalar juntos los paquetes de Colab con GPU "
                f"({torch}, {seconds:.0f} s). Lo que dice pip:\n"
                + pip_diagnosis((proc.stdout or "") + "\n" + (proc.stderr or ""))
                + "\nArréglalo: ajusta los pines de requirements.txt o requirements-gpu.txt a "
                "versiones que los Requires-Dist de Unsloth acepten, ejecuta "
                "python -m course_utils.colab y vuelve a comprobarlo con este script."
            )
        data = json.loads(report.read_text(encoding="utf-8"))
    problems = pins_not_kept(requirements, data)
    if problems:
        return False, (f"✘ {notebook}: pip resolvió el conjunto, pero sin respetar estos "
                       "pines:\n  " + "\n  ".join(problems))
    resolved = {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in data["install"]}
    shown = ", ".join(f"{name} {resolved[name]}" for name in WATCHED if name in resolved)
    return True, (f"✔ {notebook}: el conjunto de Colab con GPU se resuelve ({len(resolved)} "
                  f"paquetes, {torch}, Python {sys.version.split()[0]}, {seconds:.0f} s): {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="NOMBRE==VERSIÓN",
                        help="cambia (o añade) un pin para la comprobación; se puede repetir")
    parser.add_argument("--torch", help="versión de torch de Colab (por defecto, la de requirements.txt)")
    parser.add_argument("--no-fast-deps", action="store_true",
                        help="descargar las ruedas enteras en vez de leer sus metadatos por rangos HTTP")
    args = parser.parse_args(argv)
    overrides = {split_pin(r)[0]: r for r in args.set}
    torch = torch_constraint(version=args.torch)
    ok = True
    for notebook, requirements in gpu_sets(overrides=overrides).items():
        passed, message = check(notebook, requirements, torch, fast_deps=not args.no_fast_deps)
        print(message, flush=True)
        ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
