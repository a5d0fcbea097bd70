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


def label_logprobs(llm, prompt_ids: list[int], labels: list[str]) -> dict[str, float]:
    """``log P(label | prompt)`` for each label: the sum of its tokens' log-probabilities.

    Another way to ask a model for a class, fairer to a model that does not answer in the
    expected format: no generation, no parsing; the label the model finds most likely wins.
    The prompt is read once; each label is then read after it (the KV cache of the prompt is
    kept: llama-cpp-python's ``eval`` continues from ``n_tokens``). The model must be loaded
    with ``logits_all=True`` (``llm.scores`` then has one row of logits per position).
    """
    import numpy as np

    if not getattr(llm, "keeps_all_logits", True):  # a CourseLlama knows; a plain Llama: try
        raise ValueError("Para leer la probabilidad de cada etiqueta carga el modelo con "
                         "logits_all=True: cu.load_llm(..., logits_all=True).")
    llm.reset()
    llm.eval(prompt_ids)
    n = llm.n_tokens
    out = {}
    for label in labels:
        ids = llm.tokenize(label.encode("utf-8"), add_bos=False, special=False)
        llm.n_tokens = n  # forget the previous label; the prompt stays in the cache
        llm.eval(ids)
        logits = llm.scores[n - 1:n - 1 + len(ids)].astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        out[label] = float(logp[np.arange(len(ids)), ids].sum())
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
