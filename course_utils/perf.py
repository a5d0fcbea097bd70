"""Measuring llama.cpp on this machine: prompt processing vs generation, threads, batch, context.

Two speeds matter and they behave differently:

* **prompt processing** (``pp``): the whole prompt goes through the model in batches of
  ``n_batch`` tokens; each weight read from memory serves many tokens, so it is limited by
  arithmetic (compute-bound);
* **generation** (``tg``): one token at a time; every token reads *all* the weights once, so
  its ceiling is memory bandwidth / bytes of weights (memory-bound).

:func:`measure_speed` times both with ``Llama.eval`` directly, like llama.cpp's ``llama-bench``
(no sampling, no text decoding), so the numbers are the model's, not Python's.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from .errors import CourseError

#: A neutral text to build prompts of any length (its content does not change the speed).
FILLER = (
    "Los modelos de lenguaje procesan texto en tokens. Cada token pasa por todas las capas "
    "del modelo, y en cada capa se leen sus pesos de la memoria. "
)


class BenchmarkSetupError(CourseError, ValueError):
    """A measurement asked for more tokens than the context window holds."""


@dataclass(frozen=True)
class Measurement:
    """One measurement: ``n_prompt`` tokens processed, then ``n_gen`` tokens generated."""

    n_prompt: int
    n_gen: int
    prompt_seconds: float
    gen_seconds: float
    #: generation tokens/s of each run (one entry per repeat; empty when built by hand)
    tg_runs: tuple[float, ...] = ()

    @property
    def pp(self) -> float:
        """Prompt processing, tokens per second."""
        return self.n_prompt / self.prompt_seconds

    @property
    def tg(self) -> float:
        """Generation, tokens per second."""
        return self.n_gen / self.gen_seconds

    def as_row(self) -> dict:
        return {"prompt (tok/s)": round(self.pp, 1), "generación (tok/s)": round(self.tg, 1)}

    def tg_summary(self) -> str:
        """Generation speed in words: the median and, with several runs, their spread."""
        text = f"{self.tg:.1f} tok/s"
        if len(self.tg_runs) > 1:
            text += f" (mín {min(self.tg_runs):.1f}, máx {max(self.tg_runs):.1f})"
        return text


def filler_tokens(llm, n: int) -> list[int]:
    """Exactly ``n`` token ids of :data:`FILLER` repeated (no BOS)."""
    unit = llm.tokenize(FILLER.encode("utf-8"), add_bos=False)
    return (unit * (n // len(unit) + 1))[:n]


def measure_speed(llm, n_prompt: int = 256, n_gen: int = 32, start: int = 0,
                  repeats: int = 1) -> Measurement:
    """Time ``n_prompt`` tokens of prompt processing and ``n_gen`` single-token steps.

    ``start`` tokens are put in the KV cache first (not timed): generation speed at a context
    already filled that far. With ``repeats`` > 1 the median of each phase's time is kept, and
    every run's generation speed is in ``tg_runs``. This is the course's one generation timer:
    chapters 01, 02, 07 and 08 and ``make bench`` use it (a short ``n_prompt`` measures
    generation alone).
    """
    total = start + n_prompt + n_gen
    if n_prompt < 1 or n_gen < 1:
        raise BenchmarkSetupError("n_prompt y n_gen deben ser al menos 1.")
    if total > llm.n_ctx():
        raise BenchmarkSetupError(
            f"La medida necesita {total} tokens (start + n_prompt + n_gen) y n_ctx es "
            f"{llm.n_ctx()}: carga el modelo con n_ctx={total} o más, o pide menos tokens."
        )
    tokens = filler_tokens(llm, total)
    runs = []
    for _ in range(repeats):
        llm.reset()
        if start:
            llm.eval(tokens[:start])
        t0 = time.perf_counter()
        llm.eval(tokens[start:start + n_prompt])
        t1 = time.perf_counter()
        for token in tokens[start + n_prompt:]:
            llm.eval([token])
        t2 = time.perf_counter()
        runs.append((t1 - t0, t2 - t1))
    llm.reset()
    return Measurement(n_prompt, n_gen, statistics.median(r[0] for r in runs),
                       statistics.median(r[1] for r in runs),
                       tg_runs=tuple(n_gen / r[1] for r in runs))


def generation_by_depth(llm, depths, n_gen: int = 32) -> list[tuple[int, float]]:
    """``(depth, generation tokens/s)`` with the KV cache already holding ``depth`` tokens.

    One pass: fill to the first depth, time ``n_gen`` single-token steps, fill on to the next
    depth... so the prompt is processed once, not once per depth. Each step attends to every
    token in the cache, so generation slows down as the context fills. The speed is one over
    the *median* step time: a step slowed down by something else on the machine (or the first
    steps after loading, which pay one-time costs; a few warm-up steps go first) does not move
    it.
    """
    depths = sorted(depths)
    if any(b - a < n_gen for a, b in zip(depths, depths[1:])):
        raise BenchmarkSetupError(f"Las profundidades deben distar al menos n_gen={n_gen} tokens.")
    if depths[-1] + n_gen > llm.n_ctx():
        raise BenchmarkSetupError(
            f"La medida llega a {depths[-1] + n_gen} tokens y n_ctx es {llm.n_ctx()}: carga el "
            "modelo con más n_ctx o usa profundidades menores."
        )
    tokens = filler_tokens(llm, depths[-1] + n_gen)
    llm.reset()
    for token in tokens[:8]:  # warm-up
        llm.eval([token])
    llm.reset()
    rows = []
    for depth in depths:
        if depth > llm.n_tokens:
            llm.eval(tokens[llm.n_tokens:depth])
        steps = []
        for token in tokens[depth:depth + n_gen]:
            t0 = time.perf_counter()
            llm.eval([token])
            steps.append(time.perf_counter() - t0)
        rows.append((depth, 1 / float(np.median(steps))))
    llm.reset()
    return rows


def sweep(make_llm, values, *, n_prompt: int = 256, n_gen: int = 32, start: int = 0,
          repeats: int = 1, warmup: bool = True, progress: bool = True,
          desc: str = "midiendo") -> list[tuple[object, Measurement]]:
    """Measure :func:`measure_speed` for each value; ``make_llm(value)`` loads the model.

    A short warm-up run first (the first evaluation pays one-time costs: page faults, thread
    start-up). Each model is closed before the next one is loaded.
    """
    iterator = values
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(values, desc=desc, leave=False)
    results = []
    for value in iterator:
        llm = make_llm(value)
        try:
            if warmup:
                measure_speed(llm, n_prompt=min(32, n_prompt), n_gen=4)
            results.append((value, measure_speed(llm, n_prompt, n_gen, start, repeats)))
        finally:
            llm.close()
    return results


def memory_bandwidth(size_mb: int = 256, repeats: int = 5, threads: int | None = None) -> float:
    """Memory bandwidth of this machine in GB/s, measured by copying a large array with numpy.

    A copy reads and writes every byte, so ``2 × size`` bytes move per copy; the best of
    ``repeats`` runs is kept. Larger than any CPU cache, so it measures RAM. The copy is timed with
    one thread and with ``threads`` slices at once (default: one per physical core, as llama.cpp
    generates), and the fastest wins: one core alone rarely fills the memory bus, and a
    single-threaded figure would put the "ceiling" of a large model below what llama.cpp reaches.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .hardware import physical_cores

    threads = max(1, threads or physical_cores())
    n = size_mb * 2**20 // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the pages first
    bounds = np.linspace(0, n, threads + 1, dtype=np.int64)
    slices = [slice(int(a), int(b)) for a, b in zip(bounds, bounds[1:])]

    def copy(part: slice) -> None:
        np.copyto(dst[part], src[part])  # numpy releases the GIL while it copies

    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            for _ in range(repeats):
                t0 = time.perf_counter()
                list(pool.map(copy, slices))
                best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def bytes_per_token(path) -> int:
    """Bytes of weights that generating one token reads, from a GGUF's tensor index.

    Every tensor is read once per token, except the token-embedding matrix of a model with a
    separate output head (``output.weight``: untied, like Llama 3.1 8B): generation only looks up
    one row of it. In a tied model (SmolLM2, Llama 3.2 1B/3B) the same matrix is the output head
    and is read whole. Metadata and the tokenizer are not weights: they are not counted.
    """
    from .architecture import read_gguf_index

    tensors = {t.name: t for t in read_gguf_index(path).tensors}
    total = sum(t.n_bytes for t in tensors.values())
    embd = tensors.get("token_embd.weight")
    if embd is not None and "output.weight" in tensors:
        rows = embd.shape[-1] if len(embd.shape) > 1 else 1
        total -= embd.n_bytes - embd.n_bytes // rows  # one row looked up, not the matrix
    return total


def generation_ceiling(weight_bytes: int, bandwidth_gbs: float) -> float:
    """Estimated most tokens/s: memory bandwidth over the weight bytes each token reads.

    An estimate, not a hard bound: the bandwidth figure is a numpy copy's, not llama.cpp's access
    pattern, and a small model can be partly served from the CPU's caches. The KV cache, which
    each token also reads, is left out.
    """
    if weight_bytes <= 0 or bandwidth_gbs <= 0:
        raise ValueError("weight_bytes y bandwidth_gbs deben ser positivos.")
    return bandwidth_gbs * 1e9 / weight_bytes


def rss_bytes() -> int:
    """Resident memory of this process right now."""
    import psutil

    return psutil.Process().memory_info().rss


def context_memory(make_llm, n_ctx_values, *, progress: bool = True) -> list[tuple[int, int]]:
    """``(n_ctx, bytes)``: how much resident memory loading the model with each ``n_ctx`` adds."""
    import gc

    iterator = n_ctx_values
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(n_ctx_values, desc="n_ctx", leave=False)
    rows = []
    for n_ctx in iterator:
        gc.collect()
        before = rss_bytes()
        llm = make_llm(n_ctx)
        rows.append((n_ctx, rss_bytes() - before))
        llm.close()
        del llm
        gc.collect()
    return rows


def cpu_decoding(model_or_choice) -> bool:
    """True when the model runs on the CPU: no layer offloaded to a GPU (``n_gpu_layers == 0``).

    Takes a loaded model (``llm.course_choice``) or a :class:`~course_utils.models.ModelChoice`.
    The ladder offloads every layer (``-1``) only on a CUDA/Metal machine with a llama.cpp build
    that can use it, so this is the hardware record's verdict for that model. Claims calibrated on
    CPU decoding (more threads, more speed; a fuller context, slower generation; more bytes per
    token, slower) only hold then: on a GPU the weights and the KV cache live in VRAM.
    """
    choice = getattr(model_or_choice, "course_choice", None) or model_or_choice
    layers = getattr(choice, "n_gpu_layers", None)
    if layers is None:
        raise TypeError(f"Se esperaba un modelo cargado con cu.load_llm o un ModelChoice, no "
                        f"{type(model_or_choice).__name__}.")
    return layers == 0


#: Share of the machine's CPU that other programs may use before timings stop being trusted.
BUSY_SHARE = 0.5


def other_cpu_load(interval: float = 1.0) -> float:
    """Share (0–1) of this machine's CPU in use right now, measured over ``interval`` seconds.

    Called while the notebook itself is idle, so it is what *other* programs take. llama.cpp
    gives every core a thread; when another program competes for them, the threads wait for each
    other and a timing can come out several times slower (more threads can even be slower).
    """
    import psutil

    return psutil.cpu_percent(interval=interval) / 100


def check_on_cpu(claim: str, holds: bool, model_or_choice, why_not: str, *,
                 effect: float | None = None, min_effect: float = 0.0,
                 why_small: str = "", timing: bool = True) -> bool:
    """Assert a claim calibrated on CPU decoding where a measurement can show it; else say why not.

    Asserted (a false ``claim`` raises ``AssertionError``) only when the model runs on the CPU
    (:func:`cpu_decoding`), the expected ``effect`` (in the caller's units: extra bytes per
    token, cores...) is at least ``min_effect`` (a smaller effect is lost in the noise of a
    timing) and, for a ``timing`` claim, other programs are not using more than
    :data:`BUSY_SHARE` of the CPU (:func:`other_cpu_load`). Otherwise nothing is asserted and the
    line printed gives the reason (``why_not`` on a GPU, ``why_small`` for a small effect, the
    load for a busy machine) and the measured outcome.
    """
    outcome = "se cumple" if holds else "no se cumple"
    if not cpu_decoding(model_or_choice):
        print(f"ⓘ No se comprueba «{claim}» ({outcome} aquí): {why_not}")
        return holds
    if effect is not None and effect < min_effect:
        print(f"ⓘ No se comprueba «{claim}» ({outcome} aquí): {why_small}")
        return holds
    if timing and not holds:
        busy = other_cpu_load()
        if busy > BUSY_SHARE:
            print(f"ⓘ No se comprueba «{claim}» ({outcome} aquí): otros programas usan ahora un "
                  f"{busy:.0%} de la CPU y los tiempos medidos no son fiables. Vuelve a ejecutar "
                  "la sección con el equipo libre.")
            return holds
    if not holds:
        raise AssertionError(f"No se cumple con el modelo en la CPU: {claim}")
    print(f"✔ {claim} (modelo en la CPU).")
    return True


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0–100), linear interpolation (as numpy's default)."""
    if not len(values):
        raise ValueError("percentile de una lista vacía")
    return float(np.percentile(np.asarray(values, dtype=float), q))
