"""Benchmarks of this machine: ``python -m course_utils bench`` (``make bench``) prints tables.

* load time of the default model;
* generation speed with ``load_llm()`` defaults vs llama-cpp-python's own defaults
  (``n_threads = cpu_count() // 2``, i.e. one thread on a 2-core machine), timed with
  :func:`course_utils.perf.measure_speed`, the course's one generation timer;
* LoRA training speed on 2 CPU cores with chapter 06's settings (:data:`CHAPTER06_LORA`), counted
  as the chapter counts it (every token of each example / seconds);
* the execution time of every chapter notebook (01–08) against its budget (150 s each, chapter
  06 180 s, the whole course 600 s, on 2 CPU cores) — with ``--model`` on another GGUF (``standin``: the
  tests' Llama 3 stand-in).

Budgets are checked here, by reading the table, not by timed tests that flake.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from .perf import measure_speed

#: Prompt tokens before the timed generation: short, so the figure is generation's.
BENCH_PROMPT_TOKENS = 16


def load_time(repeats: int = 3) -> float:
    """Median seconds for ``load_llm()`` (the model file is in the OS cache after the first)."""
    from .models import load_llm

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        llm = load_llm()
        times.append(time.perf_counter() - start)
        llm.close()
    return statistics.median(times)


def notebook_time(path: Path, timeout: int = 900) -> tuple[float, str]:
    """Execute one notebook with nbclient in a temporary copy; return (seconds, status)."""
    import nbformat
    from nbclient import NotebookClient

    import tempfile

    from jupyter_client.manager import KernelManager

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="bench-kernel-") as sockets:
        # local sockets (IPC) instead of TCP ports: nothing leaves the machine, and ipykernel
        # does not print its warning about unencrypted TCP in the middle of the table
        km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "k"))
        client = NotebookClient(nb, km=km, timeout=timeout,
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        try:
            client.execute()
            status = "ok"
        except Exception as exc:  # report, don't crash the table
            status = f"ERROR: {type(exc).__name__}"
        seconds = time.perf_counter() - start
        if km.has_kernel:  # a kernel manager passed in is ours to shut down
            km.shutdown_kernel(now=True)
        return seconds, status


#: Chapter 06's LoRA run on a CPU (its training cell passes these to ``LoraConfig``, plus
#: ``first_layer`` = half the layers and the system prompt; a test checks they agree).
CHAPTER06_LORA = {"r": 16, "alpha": 32, "learning_rate": 2e-3, "epochs": 1, "batch_size": 8}
#: Issue target for chapter 06's training on 2 cores, in tokens/s.
TRAINING_TARGET = 190.0


def training_speed(steps: int = 8) -> tuple[float, float]:
    """``(tokens/s, seconds)`` of ``steps`` LoRA steps on the bundled model with chapter 06's
    settings and data (:func:`course_utils.finetune.train_lora_loop`, no validation)."""
    from .architecture import ArchSpec
    from .finetune import LoraConfig, load_torch_from_gguf, train_lora_loop
    from .models import bundled_model_path
    from .sft_data import SENTIMENT_SYSTEM, held_out_split, sentiment_dataset

    path = bundled_model_path()
    n_layers = ArchSpec.from_gguf(path).n_layers
    train = held_out_split(sentiment_dataset())[0]
    config = LoraConfig(**CHAPTER06_LORA, system=SENTIMENT_SYSTEM, first_layer=n_layers // 2)
    model, tokenizer = load_torch_from_gguf(path)
    _, result = train_lora_loop(model, tokenizer, train[:steps * config.batch_size], None,
                                config, progress=False)
    return result.tokens_per_second, result.seconds


#: Seconds per chapter on a 2-core CPU (COURSE.md); chapters not listed: DEFAULT_BUDGET.
#: Chapter 07 (performance and context) and 08 (evaluation, compression and serving) are the two
#: halves of the former chapter 07: 150 s each.
CHAPTER_BUDGETS = {"06": 180.0, "07": 150.0, "08": 150.0}
DEFAULT_BUDGET = 150.0
COURSE_BUDGET = 600.0


def chapter_budget(path: Path) -> float:
    return CHAPTER_BUDGETS.get(path.name[:2], DEFAULT_BUDGET)


def budget_table(times: dict[str, tuple[float, str]]) -> str:
    """Chapter, seconds, budget and verdict, plus the total against the course budget."""
    rows = [f"{'capítulo':<40} {'segundos':>9} {'presupuesto':>12}  resultado"]
    total = 0.0
    for name, (seconds, status) in times.items():
        budget = chapter_budget(Path(name))
        total += seconds
        verdict = status if status != "ok" else ("dentro" if seconds <= budget else "FUERA")
        rows.append(f"{name:<40} {seconds:9.1f} {budget:12.0f}  {verdict}")
    verdict = "dentro" if total <= COURSE_BUDGET else "FUERA"
    rows.append(f"{'TOTAL':<40} {total:9.1f} {COURSE_BUDGET:12.0f}  {verdict}")
    return "\n".join(rows)


def _threads(n: int) -> str:
    return f"{n} hilo" + ("" if n == 1 else "s")


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens generados por medición")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-notebooks", action="store_true", help="no ejecutar los notebooks")
    parser.add_argument("--chapters", default="", help="solo estos capítulos, p. ej. 01,05")
    parser.add_argument("--model", default=None,
                        help="ejecutar los capítulos con este GGUF (COURSE_MODEL); 'standin' = el "
                             "sustituto de Llama 3 de las pruebas, con una caché temporal")
    args = parser.parse_args(argv)
    if args.model:
        import os
        import tempfile

        if args.model == "standin":
            from .standin import standin_path

            cache = tempfile.mkdtemp(prefix="curso-bench-")
            os.environ["COURSE_CACHE"] = cache
            args.model = str(standin_path("tied"))
        os.environ["COURSE_MODEL"] = args.model
        print(f"Capítulos con COURSE_MODEL={args.model}\n", flush=True)

    from llama_cpp import Llama

    from .hardware import detect_hardware
    from .models import bundled_model_path, load_llm

    hw = detect_hardware()
    print(hw.summary(), "\n", flush=True)
    rows = [("Carga de load_llm() (mediana de 3)", f"{load_time():.2f} s")]

    llm = load_llm()
    measure_speed(llm, 4, 4)  # warm-up: the first steps after loading pay one-time costs
    ours = measure_speed(llm, BENCH_PROMPT_TOKENS, args.tokens, repeats=args.repeats)
    ours_threads = llm.context_params.n_threads
    llm.close()
    raw = Llama(model_path=str(bundled_model_path()), verbose=False)
    measure_speed(raw, 4, 4)  # warm-up: the first steps after loading pay one-time costs
    theirs = measure_speed(raw, BENCH_PROMPT_TOKENS, args.tokens, repeats=args.repeats)
    raw_threads = raw.context_params.n_threads
    raw.close()
    rows += [
        (f"Generación, load_llm() ({_threads(ours_threads)})", ours.tg_summary()),
        (f"Generación, Llama() por defecto ({_threads(raw_threads)})", theirs.tg_summary()),
        ("Aceleración de load_llm()", f"x{ours.tg / theirs.tg:.2f}"),
    ]
    tokens_s, seconds = training_speed()
    verdict = "dentro" if tokens_s >= TRAINING_TARGET else "FUERA"
    rows.append(("Entrenamiento LoRA del cap. 6 (8 pasos)",
                 f"{tokens_s:.0f} tokens/s en {seconds:.1f} s (objetivo ≥ {TRAINING_TARGET:.0f}: "
                 f"{verdict})"))
    print(_table(rows), "\n", flush=True)

    if not args.no_notebooks:
        root = Path(__file__).resolve().parent.parent / "notebooks"
        wanted = {c.strip().zfill(2) for c in args.chapters.split(",") if c.strip()}
        times = {}
        for path in sorted(root.glob("*.ipynb")):
            if wanted and path.name[:2] not in wanted:
                continue
            times[path.name] = notebook_time(path)
            print(f"{path.name}: {times[path.name][0]:.1f} s {times[path.name][1]}", flush=True)
        print("\nTiempo de ejecución de cada capítulo (presupuesto en 2 núcleos de CPU)\n"
              + budget_table(times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
