"""Evaluating a classifier that answers in free text, through llama-cpp-python."""

from __future__ import annotations

import time

from .metrics import classification_report
from .prompts import parse_label
from .sft_data import to_messages


def classify(llm, row: dict, labels: list[str], system: str | None = None,
             max_tokens: int = 8) -> tuple[str | None, str]:
    """Ask the model with the training prompt format; return ``(parsed label, raw answer)``.

    ``max_tokens`` must cover the longest label: "NEGATIVO" is 3–4 tokens in SmolLM2's vocabulary.
    """
    messages = to_messages({**row, "output": row.get("output", "")}, system)["messages"][:-1]
    out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0)
    text = out["choices"][0]["message"]["content"] or ""
    return parse_label(text, labels), text


def evaluate(llm, rows: list[dict], labels: list[str], system: str | None = None,
             progress: bool = True, desc: str = "evaluando") -> dict:
    """Accuracy, per-class P/R/F1, unparseable answers and seconds per example."""
    iterator = rows
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(rows, desc=desc, leave=False)
    start = time.perf_counter()
    results = [classify(llm, row, labels, system) for row in iterator]
    report = classification_report([r["output"] for r in rows], [p for p, _ in results], labels)
    report["segundos por ejemplo"] = (time.perf_counter() - start) / max(1, len(rows))
    report["predicciones"] = [p for p, _ in results]
    report["respuestas"] = [t for _, t in results]
    return report


def _last_logits(llm):
    """Logits of the last position llama.cpp evaluated (``llama_get_logits_ith(ctx, -1)``)."""
    import llama_cpp
    import numpy as np

    pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).astype(np.float64)


def label_logprobs(llm, prompt_ids: list[int], labels: list[str]) -> dict[str, float]:
    """``log P(label | prompt)`` for each label: the sum of its tokens' log-probabilities.

    Another way to ask a model for a class, fairer to a model that does not answer in the
    expected format: no generation, no parsing; the label the model finds most likely wins.
    The prompt is read once and kept in the KV cache; each label is then read after it, one
    token at a time (llama-cpp-python's ``eval`` continues from ``n_tokens``, so setting it back
    to the prompt's length forgets the previous label). Only the last position's logits are
    computed each time: no need for ``logits_all=True``, which computes the output head at every
    prompt position.
    """
    import numpy as np

    llm.reset()
    llm.eval(prompt_ids)
    n = llm.n_tokens
    first = _last_logits(llm)
    out = {}
    for label in labels:
        ids = llm.tokenize(label.encode("utf-8"), add_bos=False, special=False)
        llm.n_tokens = n  # forget the previous label; the prompt stays in the cache
        total = 0.0
        logits = first
        for k, token in enumerate(ids):
            top = logits.max()
            total += float(logits[token] - top - np.log(np.exp(logits - top).sum()))
            if k + 1 < len(ids):
                llm.eval([token])
                logits = _last_logits(llm)
        out[label] = total
    return out


def evaluate_by_logprob(llm, rows: list[dict], labels: list[str], system: str | None = None,
                        progress: bool = True, desc: str = "log-prob") -> dict:
    """Like :func:`evaluate`, but the prediction is the label with the highest log-probability
    after the chat prompt (:func:`label_logprobs`), so every answer has a label."""
    from .context import chat_prompt_ids

    iterator = rows
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(rows, desc=desc, leave=False)
    start = time.perf_counter()
    preds = []
    for row in iterator:
        messages = to_messages({**row, "output": row.get("output", "")}, system)["messages"][:-1]
        scores = label_logprobs(llm, chat_prompt_ids(llm, messages), labels)
        preds.append(max(scores, key=scores.get))
    report = classification_report([r["output"] for r in rows], preds, labels)
    report["segundos por ejemplo"] = (time.perf_counter() - start) / max(1, len(rows))
    report["predicciones"] = preds
    return report
