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
    """The tokens the model reads for ``prompt`` (wrapped in its chat template with ``chat``)."""
    from .prompts import gguf_chat_template, render_template

    text = prompt
    if chat:
        template = gguf_chat_template(llm)
        if template is None:
            raise ValueError("Este modelo no trae plantilla de chat: usa chat=False.")
        text = render_template(template, [{"role": "user", "content": prompt}])
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)


def next_token_logits(llm, prompt: str, chat: bool = True) -> np.ndarray:
    """Raw logits of the token that comes after ``prompt``.

    With ``chat=True`` the prompt is wrapped in the model's chat template as a user message, so
    this is the distribution of the *first token of the answer*. The KV cache is reset before and
    after, so later generations are not affected.
    """
    tokens = prompt_tokens(llm, prompt, chat)
    llm.reset()
    llm.eval(tokens)
    ptr = llm._ctx.get_logits_ith(-1)  # logits of the last evaluated token
    logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float64)
    llm.reset()
    return logits


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
    tokens = prompt_tokens(llm, prompt, chat)
    llm.set_seed(seed)
    # Like create_completion, generate() keeps the prompt in the KV cache and reuses it: many
    # draws after the same prompt evaluate it once.
    draws = llm.generate(tokens, top_k=top_k, top_p=top_p, min_p=min_p, temp=temperature)
    try:
        token = next(draws)
    finally:
        draws.close()
    return int(token)
