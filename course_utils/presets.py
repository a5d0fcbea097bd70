"""Decoding presets: validated sampling parameters per use case, and an A/B helper.

The eight presets are the use-case configurations of the course notes (``000_*``), kept as they
are so they can be measured; :meth:`DecodingPreset.redundancies` says where a combination makes a
parameter irrelevant in llama.cpp (for instance ``top_k=1`` makes ``temperature`` pointless).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

from .errors import CourseError
from .metrics import distinct_n, repetition_rate, unique_fraction, words


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
            notes.append("temperature=0 elige siempre el token más probable: top_k, top_p y "
                         "min_p no tienen efecto.")
        elif self.top_k == 1:
            notes.append("top_k=1 deja un solo candidato: temperature, top_p y min_p no tienen "
                         "efecto (es decodificación voraz).")
        return notes


PRESETS: dict[str, DecodingPreset] = {p.name: p for p in (
    DecodingPreset("factual", "Documentación técnica / respuestas factuales",
                   temperature=0.1, top_k=1, top_p=0.5, max_tokens=200),
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
    DecodingPreset("codigo", "Generación de código",
                   temperature=0.1, top_k=1, top_p=0.5, max_tokens=500),
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
            samples: int = 3, max_tokens: int | None = None, seed: int = 0) -> list[dict]:
    """Run two presets on the same prompts and seeds; return one row of metrics per preset.

    ``max_tokens`` overrides both presets' (to compare sampling, not length, and to save time).
    Prints a side-by-side comparison.
    """
    rows = []
    for preset in (preset_a, preset_b):
        params = preset.kwargs()
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        start = time.perf_counter()
        texts = [t for p in prompts for t in sample_many(llm, p, samples, seed=seed, **params)]
        elapsed = time.perf_counter() - start
        per_prompt = [texts[i * samples:(i + 1) * samples] for i in range(len(prompts))]
        rows.append({
            "preset": preset.name,
            "respuestas distintas": sum(unique_fraction(g) for g in per_prompt) / len(prompts),
            "distinct-2": sum(distinct_n(g, 2) for g in per_prompt) / len(prompts),
            "palabras (media)": sum(len(words(t)) for t in texts) / len(texts),
            "segundos": elapsed,
            "ejemplo": texts[0],
        })
    width = max(len(k) for k in rows[0]) + 2
    print(f"{'':{width}}{rows[0]['preset']:>20}{rows[1]['preset']:>20}")
    for key in ("respuestas distintas", "distinct-2", "palabras (media)", "segundos"):
        print(f"{key:{width}}{rows[0][key]:>20.2f}{rows[1][key]:>20.2f}")
    return rows
