"""Decoding presets: validated sampling parameters per use case, and an A/B helper.

Eight use-case presets. The common recipe for factual answers and code, ``temperature=0.1`` with
``top_k=1``, is greedy decoding in disguise (one candidate left: the temperature does nothing), so
``factual`` and ``codigo`` say it plainly: ``temperature=0`` and no filters (they would do nothing
either). :meth:`DecodingPreset.redundancies` flags combinations that make a parameter irrelevant
in llama.cpp. :func:`ab_test` compares two presets on the same prompts and seeds, on diversity
and, when the right answers are known, on accuracy with a Wilson interval.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

from .errors import CourseError
from .metrics import distinct_n, repetition_rate, unique_fraction, words
from .stats import wilson_interval


class InvalidParameterError(CourseError, ValueError):
    """A sampling parameter outside its valid range."""


#: parameter -> (check, description of the valid range)
RANGES = {
    "temperature": (lambda v: v >= 0, "un número ≥ 0 (0 = voraz, sin azar)"),
    "top_k": (lambda v: isinstance(v, int) and v >= 0, "un entero ≥ 0 (0 = sin límite)"),
    "top_p": (lambda v: 0 < v <= 1, "un número en (0, 1] (1 = sin límite)"),
    "min_p": (lambda v: 0 <= v <= 1, "un número en [0, 1] (0 = sin límite)"),
    "max_tokens": (lambda v: isinstance(v, int) and v >= 1, "un entero ≥ 1"),
    "repeat_penalty": (lambda v: v > 0, "un número > 0 (1 = sin penalización)"),
    "frequency_penalty": (lambda v: -2 <= v <= 2, "un número en [-2, 2] (0 = sin penalización)"),
    "presence_penalty": (lambda v: -2 <= v <= 2, "un número en [-2, 2] (0 = sin penalización)"),
}


def validate_params(**params) -> dict:
    """Check sampling parameters; raise :class:`InvalidParameterError` naming the bad one."""
    for name, value in params.items():
        if name not in RANGES or value is None:
            continue
        check, valid = RANGES[name]
        try:
            ok = bool(check(value))
        except TypeError:
            ok = False
        if not ok or isinstance(value, bool):
            raise InvalidParameterError(f"{name}={value!r} no es válido: debe ser {valid}.")
    return params


def check_fits(llm, prompt: str, max_tokens: int) -> None:
    """Raise :class:`InvalidParameterError` if prompt + ``max_tokens`` exceed ``llm.n_ctx()``.

    Without this check llama-cpp-python silently shortens the answer to what fits.
    """
    n_prompt = len(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
    room = llm.n_ctx() - n_prompt
    if max_tokens > room:
        raise InvalidParameterError(
            f"max_tokens={max_tokens} no cabe: el prompt ocupa {n_prompt} tokens y n_ctx es "
            f"{llm.n_ctx()}, así que quedan {room} para la respuesta. Baja max_tokens a {room} "
            f"como mucho o carga el modelo con más contexto (cu.load_llm(n_ctx=...))."
        )


@dataclass(frozen=True)
class DecodingPreset:
    """A named, validated set of sampling parameters."""

    name: str
    description: str
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    max_tokens: int = 256
    min_p: float = 0.05
    repeat_penalty: float = 1.0

    def __post_init__(self):
        validate_params(**self.kwargs())

    def kwargs(self) -> dict:
        """Keyword arguments for ``llm(...)`` / ``create_chat_completion(...)``."""
        params = asdict(self)
        del params["name"], params["description"]
        return params

    def with_changes(self, **changes) -> "DecodingPreset":
        return replace(self, **changes)

    def redundancies(self) -> list[str]:
        """Parameters that have no effect in llama.cpp with this combination."""
        notes = []
        if self.temperature == 0:
            active = [f"{name}={value}" for name, value, off in (
                ("top_k", self.top_k, 0), ("top_p", self.top_p, 1.0), ("min_p", self.min_p, 0.0))
                if value != off]
            if active:
                verb = "no tiene" if len(active) == 1 else "no tienen"
                notes.append(f"temperature=0 elige siempre el token más probable: "
                             f"{', '.join(active)} {verb} efecto.")
        elif self.top_k == 1:
            notes.append("top_k=1 deja un solo candidato: temperature, top_p y min_p no tienen "
                         "efecto (es decodificación voraz).")
        return notes


PRESETS: dict[str, DecodingPreset] = {p.name: p for p in (
    # Greedy, said plainly: the usual "temperature=0.1, top_k=1" is exactly this (top_k=1 leaves
    # one candidate), and with temperature=0 llama.cpp applies no filter, so none is set.
    DecodingPreset("factual", "Documentación técnica / respuestas factuales (voraz)",
                   temperature=0, top_k=0, top_p=1.0, min_p=0.0, max_tokens=200),
    DecodingPreset("resumen_ejecutivo", "Resúmenes ejecutivos",
                   temperature=0.3, top_k=5, top_p=0.6, max_tokens=100),
    DecodingPreset("marketing", "Contenido de marketing / copywriting",
                   temperature=0.8, top_k=40, top_p=0.9, max_tokens=150),
    DecodingPreset("brainstorming", "Brainstorming / ideas creativas",
                   temperature=0.9, top_k=50, top_p=0.95, max_tokens=200),
    DecodingPreset("chatbot", "Chatbot conversacional",
                   temperature=0.7, top_k=30, top_p=0.85, max_tokens=100),
    DecodingPreset("analisis_datos", "Análisis de datos / reportes",
                   temperature=0.2, top_k=10, top_p=0.7, max_tokens=300),
    DecodingPreset("codigo", "Generación de código (voraz)",
                   temperature=0, top_k=0, top_p=1.0, min_p=0.0, max_tokens=500),
    DecodingPreset("storytelling", "Storytelling / narrativa",
                   temperature=0.85, top_k=40, top_p=0.9, max_tokens=400),
)}


def get_preset(name: str) -> DecodingPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidParameterError(
            f"No hay ningún preset {name!r}. Disponibles: {', '.join(PRESETS)}."
        ) from None


def sample_many(llm, prompt: str, n: int, *, seed: int = 0, chat: bool = True,
                progress: bool = True, **params) -> list[str]:
    """``n`` answers to the same prompt, with seeds ``seed``, ``seed + 1``...

    Each answer is reproducible: the same seed gives the same text.
    """
    validate_params(**params)
    params.setdefault("max_tokens", 64)
    iterator = range(n)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=prompt[:30], leave=False)
    texts = []
    for i in iterator:
        if chat:
            out = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}],
                                             seed=seed + i, **params)
            texts.append(out["choices"][0]["message"]["content"] or "")
        else:
            texts.append(llm(prompt, seed=seed + i, **params)["choices"][0]["text"])
    return texts


def diversity_report(texts: list[str]) -> dict:
    """Diversity of a set of answers to one prompt."""
    return {
        "respuestas distintas": unique_fraction(texts),
        "distinct-2": distinct_n(texts, 2),
        "palabras (media)": sum(len(words(t)) for t in texts) / max(1, len(texts)),
        "repetición interna (media)": sum(repetition_rate(t) for t in texts) / max(1, len(texts)),
    }


def ab_test(llm, preset_a: DecodingPreset, preset_b: DecodingPreset, prompts: list[str],
            samples: int = 3, max_tokens: int | None = None, seed: int = 0,
            answers: list | None = None, is_correct=None, show: bool = True) -> list[dict]:
    """Run two presets on the same prompts and seeds; return one row of metrics per preset.

    Diversity per prompt (averaged over prompts): ``respuestas distintas`` and ``distinct-2``.
    Quality, when ``answers`` gives the acceptable answers of each prompt (a string or a list of
    strings per prompt): each reply is right if ``is_correct(text, answers_of_its_prompt)``
    (default :func:`course_utils.prompts.mentions`, whole words), and the row gets ``aciertos``
    (right replies), ``n``, ``acierto`` (the proportion) and ``intervalo 95 %`` (Wilson), so
    "more varied" is never read without "how often right". ``max_tokens`` overrides both presets'
    (to compare sampling, not length, and to save time). Each row keeps the replies in ``textos``
    (one list of ``samples`` per prompt). With ``show``, prints a side-by-side comparison.
    """
    if answers is not None and len(answers) != len(prompts):
        raise ValueError(f"answers tiene {len(answers)} elementos y prompts {len(prompts)}: "
                         "hace falta una lista de respuestas válidas por prompt.")
    if is_correct is None:
        from .prompts import mentions as is_correct
    rows = []
    for preset in (preset_a, preset_b):
        params = preset.kwargs()
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        start = time.perf_counter()
        per_prompt = [sample_many(llm, p, samples, seed=seed, progress=False, **params)
                      for p in prompts]
        elapsed = time.perf_counter() - start
        texts = [t for group in per_prompt for t in group]
        row = {
            "preset": preset.name,
            "respuestas distintas": sum(unique_fraction(g) for g in per_prompt) / len(prompts),
            "distinct-2": sum(distinct_n(g, 2) for g in per_prompt) / len(prompts),
            "palabras (media)": sum(len(words(t)) for t in texts) / len(texts),
        }
        if answers is not None:
            hits = sum(bool(is_correct(t, ok)) for ok, group in zip(answers, per_prompt)
                       for t in group)
            row |= {"aciertos": hits, "n": len(texts), "acierto": hits / len(texts),
                    "intervalo 95 %": wilson_interval(hits, len(texts))}
        rows.append(row | {"segundos": elapsed, "ejemplo": texts[0], "textos": per_prompt})
    if show:
        print(format_ab(rows))
    return rows


def format_ab(rows: list[dict]) -> str:
    """The rows of :func:`ab_test` side by side, as text (accuracy with its interval if any)."""
    keys = ["respuestas distintas", "distinct-2", "palabras (media)", "segundos"]
    width = max(len(k) for k in keys + ["acierto (IC 95 %)"]) + 2
    lines = [f"{'':{width}}" + "".join(f"{r['preset']:>22}" for r in rows)]
    if "acierto" in rows[0]:
        cells = [f"{r['aciertos']}/{r['n']} [{r['intervalo 95 %'][0]:.0%}–"
                 f"{r['intervalo 95 %'][1]:.0%}]" for r in rows]
        lines.append(f"{'acierto (IC 95 %)':{width}}" + "".join(f"{c:>22}" for c in cells))
    for key in keys:
        lines.append(f"{key:{width}}" + "".join(f"{r[key]:>22.2f}" for r in rows))
    return "\n".join(lines)
