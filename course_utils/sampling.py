"""The next-token distribution and the filters that reshape it, in numpy.

llama-cpp-python 0.3.x builds this sampler chain (``Llama._init_sampler``)::

    penalties -> top_k -> typical_p -> top_p -> min_p -> temperature -> random draw

so ``top_k``, ``top_p`` and ``min_p`` choose the candidates on the *untempered* distribution, and
temperature only reshapes the probabilities of the survivors. ``llama_cpp_distribution``
reproduces that order; the course checks it against llama.cpp's real draws. ``temperature == 0``
is a plain argmax (greedy) and ``temperature < 0`` draws from the full distribution at T = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities from logits at ``temperature`` (> 0); -inf logits get probability 0."""
    if temperature <= 0:
        raise ValueError("temperature debe ser > 0 en softmax (0 es la decodificación voraz).")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - np.max(z[np.isfinite(z)])
    p = np.exp(z)
    return p / p.sum()


def top_k_mask(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the ``k`` highest logits (``k <= 0`` keeps all, as in llama.cpp)."""
    logits = np.asarray(logits)
    if k <= 0 or k >= logits.size:
        return np.ones(logits.size, dtype=bool)
    keep = np.zeros(logits.size, dtype=bool)
    keep[np.argsort(-logits, kind="stable")[:k]] = True
    return keep


def top_p_mask(probs: np.ndarray, p: float, min_keep: int = 1) -> np.ndarray:
    """Nucleus: the most probable tokens until their cumulative probability reaches ``p``.

    The token that crosses ``p`` is kept (llama.cpp's rule); ``p >= 1`` keeps all.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if p >= 1.0:
        return probs > 0
    order = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[order])
    n_keep = max(min_keep, int(np.searchsorted(cumulative, p) + 1))
    keep = np.zeros(probs.size, dtype=bool)
    keep[order[:n_keep]] = True
    return keep & (probs > 0)


def min_p_mask(probs: np.ndarray, min_p: float, min_keep: int = 1) -> np.ndarray:
    """Keep tokens whose probability is at least ``min_p`` times the top token's."""
    probs = np.asarray(probs, dtype=np.float64)
    if min_p <= 0:
        return probs > 0
    keep = probs >= min_p * probs.max()
    if keep.sum() < min_keep:
        keep[np.argsort(-probs, kind="stable")[:min_keep]] = True
    return keep


@dataclass(frozen=True)
class Distribution:
    """The next-token distribution after the sampler chain."""

    probs: np.ndarray  #: final probabilities (0 outside ``kept``)
    kept: np.ndarray  #: boolean mask of the surviving candidates
    greedy: bool = False  #: temperature == 0: the argmax is chosen, no randomness

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())


def llama_cpp_distribution(logits: np.ndarray, *, temperature: float = 0.8, top_k: int = 40,
                           top_p: float = 0.95, min_p: float = 0.05) -> Distribution:
    """What llama.cpp samples from, given raw logits and the sampling parameters."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        kept = np.zeros(logits.size, dtype=bool)
        kept[int(np.argmax(logits))] = True
        return Distribution(kept.astype(np.float64), kept, greedy=True)
    if temperature < 0:  # llama-cpp-python: plain draw from the full distribution
        p = softmax(logits)
        return Distribution(p, p > 0)
    kept = top_k_mask(logits, top_k)
    masked = np.where(kept, logits, -np.inf)
    kept &= top_p_mask(softmax(masked), top_p)
    masked = np.where(kept, logits, -np.inf)
    kept &= min_p_mask(softmax(masked), min_p)
    final = softmax(np.where(kept, logits, -np.inf), temperature)
    return Distribution(final, kept)


def prompt_tokens(llm, prompt: str, chat: bool = True) -> list[int]:
    """The tokens the model reads for ``prompt``: with ``chat``, exactly what
    ``create_chat_completion`` sends for it as a user message.

    That is the model's chat format (``llm.chat_format``): llama-cpp-python's own ``"chatml"`` or
    ``"llama-3"`` formatter when the model was loaded with one (the course loads SmolLM2 with
    ``"chatml"``, which writes an empty system turn), otherwise the template in its GGUF.
    """
    from llama_cpp import llama_chat_format

    from .prompts import gguf_chat_template, render_template

    text = prompt
    if chat:
        messages = [{"role": "user", "content": prompt}]
        builtin = {"chatml": llama_chat_format.format_chatml,
                   "llama-3": llama_chat_format.format_llama3}.get(llm.chat_format)
        if builtin is not None:
            text = builtin(messages=messages).prompt
        else:
            template = gguf_chat_template(llm)
            if template is None:
                raise ValueError("Este modelo no trae plantilla de chat: usa chat=False.")
            text = render_template(template, messages)
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)


class LogitsNotKeptError(ValueError):
    """The model was loaded without ``logits_all=True``: llama-cpp-python keeps no logits."""


def next_token_logits(llm, prompt: str, chat: bool = True) -> np.ndarray:
    """Raw logits of the token that comes after ``prompt``.

    With ``chat=True`` the prompt is wrapped in the model's chat template as a user message, so
    this is the distribution of the *first token of the answer*. Public llama-cpp-python API
    only: the model must be loaded with ``logits_all=True`` (as for ``logprobs``), so that
    ``llm.eval`` keeps one row of logits per evaluated token in ``llm.scores``. The KV cache is
    reset before and after, so later generations are not affected.
    """
    tokens = prompt_tokens(llm, prompt, chat)
    row = len(tokens) - 1
    if llm.scores.shape[0] < len(tokens):
        raise LogitsNotKeptError(_NO_LOGITS.format(n=len(tokens)))
    llm.reset()
    llm.scores[row, :] = np.nan  # without logits_all, eval() leaves this row untouched
    llm.eval(tokens)
    logits = llm.scores[row, :].astype(np.float64)  # row i: what comes after token i
    llm.reset()
    if np.isnan(logits).any():
        raise LogitsNotKeptError(_NO_LOGITS.format(n=len(tokens)))
    return logits


_NO_LOGITS = ("Para leer los logits, carga el modelo con logits_all=True, por ejemplo "
              "cu.load_llm(n_ctx=1024, logits_all=True): sin esa opción llama-cpp-python no guarda "
              "los logits de cada token evaluado (el prompt ocupa {n} tokens).")


def top_candidates(llm, dist_or_probs, k: int = 10) -> list[tuple[int, str, float]]:
    """The ``k`` most probable tokens as ``(id, readable text, probability)``."""
    from .tokens import readable

    probs = dist_or_probs.probs if isinstance(dist_or_probs, Distribution) else np.asarray(dist_or_probs)
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), readable(llm.detokenize([int(i)], special=True)), float(probs[i])) for i in order]


def sample_next_token(llm, prompt: str, *, seed: int, chat: bool = True, temperature: float = 0.8,
                      top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05) -> int:
    """The token id llama.cpp's own sampler draws right after ``prompt``, with ``seed``.

    Same prompt tokens as :func:`next_token_logits` and the same sampler chain
    ``create_completion`` uses (``Llama.generate`` after ``set_seed``). It returns the *id*, not
    text: a token can be half of a UTF-8 character (common in a 128 000-token vocabulary), and
    llama-cpp-python's text functions then keep generating to complete the character.
    The prompt stays in the KV cache (as after ``create_completion``), so the next draw after the
    same prompt only re-evaluates its last token.
    """
    return _draw(llm, prompt_tokens(llm, prompt, chat), seed, top_k=top_k, top_p=top_p,
                 min_p=min_p, temperature=temperature)


def _draw(llm, tokens: list[int], seed: int, *, top_k: int = 40, top_p: float = 0.95,
          min_p: float = 0.05, temperature: float = 0.8) -> int:
    llm.set_seed(seed)
    # Like create_completion, generate() keeps the prompt in the KV cache and reuses it: many
    # draws after the same prompt evaluate it once.
    draws = llm.generate(tokens, top_k=top_k, top_p=top_p, min_p=min_p, temp=temperature)
    try:
        token = next(draws)
    finally:
        draws.close()
    return int(token)


def draw_many(llm, prompt: str, n: int, *, chat: bool = True, first_seed: int = 0,
              **params) -> list[int]:
    """``n`` first tokens drawn by llama.cpp after ``prompt``, with seeds ``first_seed``,
    ``first_seed + 1``... (see :func:`sample_next_token`; the prompt is evaluated once)."""
    tokens = prompt_tokens(llm, prompt, chat)  # rendered and tokenized once
    return [_draw(llm, tokens, first_seed + i, **params) for i in range(n)]


@dataclass(frozen=True)
class FrequencyCheck:
    """llama.cpp's draws compared with a :class:`Distribution` (see :func:`compare_draws`)."""

    rows: list[dict]  #: one row per group of tokens: probability, frequency, tolerance, ok
    n: int  #: number of draws
    n_kept: int  #: candidates numpy keeps
    n_drawn: int  #: different tokens llama.cpp drew
    outside: int  #: draws outside numpy's kept set (must be 0)
    missing: list[int]  #: kept tokens so probable that never seeing them is almost impossible

    @property
    def ok(self) -> bool:
        return self.outside == 0 and not self.missing and all(r["ok"] for r in self.rows)

    @property
    def worst(self) -> float:
        """The largest ``|frequency - p| / tolerance`` over the groups (ok while <= 1)."""
        return max(abs(r["frecuencia (llama.cpp)"] - r["probabilidad (numpy)"]) / r["tolerancia"]
                   for r in self.rows)

    def summary(self) -> dict:
        """One row for a table comparing several settings."""
        return {"numpy conserva": self.n_kept, "llama.cpp sacó (distintos)": self.n_drawn,
                "fuera del conjunto": self.outside, "grupos comparados": len(self.rows),
                "peor |f − p| / tolerancia": round(self.worst, 2)}


def compare_draws(dist: Distribution, draws: list[int], *, z: float = 4.0,
                  min_expected: float = 5.0, sure: float = 1e-6) -> FrequencyCheck:
    """Do ``draws`` (token ids) look like samples of ``dist``?

    * every draw must be inside ``dist.kept``;
    * every kept token whose absence in ``n`` draws has probability below ``sure``
      (``(1 - p)**n < sure``) must have been drawn: together with the first rule this checks the
      kept *count*, not only membership;
    * frequencies: each token expected at least ``min_expected`` times is compared alone, the rest
      of the kept set as one group; each group must satisfy
      ``|frequency - p| <= z * sqrt(p (1 - p) / n)``, ``z`` binomial standard deviations (4 by
      default: a correct sampler fails one group in ~16 000).
    """
    n = len(draws)
    if n == 0:
        raise ValueError("Hacen falta muestras.")
    draws = np.asarray(draws, dtype=np.int64)
    counts = np.bincount(draws, minlength=dist.probs.size)[: dist.probs.size]
    kept = np.flatnonzero(dist.kept)
    outside = int(n - counts[kept].sum())
    p_kept = dist.probs[kept]
    missing = [int(i) for i, p in zip(kept, p_kept) if (1 - p) ** n < sure and counts[i] == 0]
    alone = [int(i) for i in kept[np.argsort(-p_kept, kind="stable")] if dist.probs[i] * n >= min_expected]
    groups = [([i], None) for i in alone]
    rest = sorted(set(kept.tolist()) - set(alone))
    if rest:
        groups.append((rest, f"resto ({len(rest)} tokens)"))
    rows = []
    for ids, name in groups:
        p = float(dist.probs[ids].sum())
        freq = float(counts[ids].sum()) / n
        tol = z * np.sqrt(p * (1 - p) / n) + 1e-9
        rows.append({"id": ids[0] if name is None else None, "grupo": name,
                     "probabilidad (numpy)": p, "frecuencia (llama.cpp)": freq,
                     "tolerancia": float(tol), "ok": abs(freq - p) <= tol})
    return FrequencyCheck(rows, n, int(dist.n_kept), int(np.count_nonzero(counts)), outside, missing)


def continuation_logprobs(llm, prompt: str, continuation: str, chat: bool = True) -> np.ndarray:
    """Log-probability (natural log, at T = 1, no filters) the model gives each token of
    ``continuation`` right after ``prompt`` (wrapped in the chat template with ``chat``).

    ``exp(-mean)`` is the model's own perplexity of the text: a rough proxy of fluency (it also
    rewards repetition, and greedy text gets the best score by construction). Needs
    ``logits_all=True``, like :func:`next_token_logits`. When the prompt is already in the KV
    cache (scoring several replies to the same prompt), only the continuation is evaluated.
    """
    context = prompt_tokens(llm, prompt, chat)
    tokens = llm.tokenize(continuation.encode("utf-8"), add_bos=False, special=False)
    if not tokens:
        return np.zeros(0)
    n, everything = len(context), context + tokens
    if llm.scores.shape[0] < len(everything):
        raise LogitsNotKeptError(_NO_LOGITS.format(n=len(everything)))
    cached = (llm.n_tokens >= n and llm.input_ids[:n].tolist() == context
              and not np.isnan(llm.scores[n - 1, 0]))
    if cached:
        llm.n_tokens = n  # keep the prompt's KV cache and its row of logits; eval the rest
    else:
        llm.reset()
        llm.scores[n - 1, :] = np.nan  # without logits_all, eval() leaves rows untouched
    llm.scores[len(everything) - 2, :] = np.nan
    llm.eval(tokens if cached else everything)
    rows = llm.scores[n - 1: len(everything) - 1, :].astype(np.float64)  # row i -> token i+1
    if np.isnan(rows).any():
        llm.reset()
        raise LogitsNotKeptError(_NO_LOGITS.format(n=len(everything)))
    rows -= rows.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(rows).sum(axis=1))
    return rows[np.arange(len(tokens)), tokens] - log_norm


def token_text(llm, token_id: int) -> str:
    """Readable text of one token (special tokens by name, partial UTF-8 bytes as ``⟨C3⟩``)."""
    from .tokens import readable

    return readable(llm.detokenize([int(token_id)], special=True))


def plot_candidates(ax, llm, dist: Distribution, base_probs: np.ndarray, title: str,
                    n_show: int = 15) -> None:
    """Bar chart of the ``n_show`` most probable tokens of ``base_probs`` (T = 1, no filters):
    final probability after the sampler in colour (green if kept, grey if filtered out), the
    original probability as a black outline."""
    order = np.argsort(-np.asarray(base_probs), kind="stable")[:n_show]
    labels = [token_text(llm, i) for i in order]
    final = dist.probs[order]
    colors = ["tab:green" if dist.kept[i] else "lightgray" for i in order]
    x = range(len(order))
    ax.bar(x, final, color=colors, alpha=0.85, label="tras el sampler")
    ax.bar(x, np.asarray(base_probs)[order], color="none", edgecolor="black", lw=0.8,
           label="original (T=1)", zorder=3)
    ax.set_xticks(list(x), labels, rotation=60, fontsize=8)
    ax.set_title(f"{title} · {dist.n_kept} candidatos", fontsize=10)
    ax.set_ylim(0, max(0.6, float(final.max()) * 1.1))


def interactive_filters(llm, logits: np.ndarray):
    """Sliders for temperature, top_k, top_p and min_p that redraw :func:`plot_candidates` on
    ``logits`` (needs ``ipywidgets``; for JupyterLab and Colab)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    probs = softmax(logits)

    def redraw(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05):
        dist = llama_cpp_distribution(logits, temperature=temperature, top_k=top_k,
                                      top_p=top_p, min_p=min_p)
        fig, ax = plt.subplots(figsize=(7, 3))
        plot_candidates(ax, llm, dist, probs,
                        f"T={temperature}, top_k={top_k}, top_p={top_p}, min_p={min_p}")
        plt.show()

    return widgets.interact(
        redraw,
        temperature=widgets.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.05),
        top_k=widgets.IntSlider(value=40, min=0, max=100),
        top_p=widgets.FloatSlider(value=0.95, min=0.05, max=1.0, step=0.05),
        min_p=widgets.FloatSlider(value=0.05, min=0.0, max=1.0, step=0.05),
    )
