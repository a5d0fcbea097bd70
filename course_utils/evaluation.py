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


def _rows(rows: list[dict], progress: bool, desc: str):
    if not progress:
        return rows
    from tqdm.auto import tqdm

    return tqdm(rows, desc=desc, leave=False)


def _report(rows: list[dict], preds: list, labels: list[str], seconds: float) -> dict:
    report = classification_report([r["output"] for r in rows], preds, labels)
    report["segundos por ejemplo"] = seconds / max(1, len(rows))
    report["predicciones"] = list(preds)
    return report


def evaluate(llm, rows: list[dict], labels: list[str], system: str | None = None,
             progress: bool = True, desc: str = "evaluando") -> dict:
    """Accuracy, per-class P/R/F1, unparseable answers and seconds per example."""
    start = time.perf_counter()
    results = [classify(llm, row, labels, system) for row in _rows(rows, progress, desc)]
    report = _report(rows, [p for p, _ in results], labels, time.perf_counter() - start)
    report["respuestas"] = [t for _, t in results]
    return report


def last_logits(llm):
    """Logits of the last position llama.cpp evaluated (``llama_get_logits_ith(ctx, -1)``)."""
    import llama_cpp
    import numpy as np

    pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).astype(np.float64)


def _log_softmax_at(logits, token: int) -> float:
    import numpy as np

    top = logits.max()
    return float(logits[token] - top - np.log(np.exp(logits - top).sum()))


def label_logprobs(llm, prompt_ids: list[int], labels: list[str]) -> dict[str, float]:
    """``log P(label | prompt)`` for each label: the sum of its tokens' log-probabilities.

    Another way to ask a model for a class, fairer to a model that does not answer in the
    expected format: no generation, no parsing; the label the model finds most likely wins.

    Nothing is read twice: the part of the prompt already in the KV cache (the system prompt and
    the instruction that the previous review shared) is kept, and only the rest is evaluated
    (llama-cpp-python's ``eval`` continues from ``n_tokens`` and drops what the cache held after
    it). Each label is then read after the prompt. With a model loaded with
    ``logits_all=True`` a label's tokens go in one call and the logits of every position are
    read from ``llm.scores``; otherwise one token at a time, reading only the last position's
    logits (``llama_get_logits_ith``).
    """
    import numpy as np

    keep = 0
    limit = min(llm.n_tokens, len(prompt_ids) - 1)  # the last prompt token is always evaluated
    cached = llm.input_ids
    while keep < limit and cached[keep] == prompt_ids[keep]:
        keep += 1
    llm.n_tokens = keep
    llm.eval(prompt_ids[keep:])
    n = llm.n_tokens
    all_logits = bool(getattr(llm, "keeps_all_logits", False))
    first = (llm.scores[n - 1] if all_logits else last_logits(llm)).astype(np.float64)
    out = {}
    for label in labels:
        ids = llm.tokenize(label.encode("utf-8"), add_bos=False, special=False)
        llm.n_tokens = n  # forget the previous label; the prompt stays in the cache
        if all_logits:
            if len(ids) > 1:
                llm.eval(ids[:-1])
            rows = [first] + [llm.scores[n + k].astype(np.float64) for k in range(len(ids) - 1)]
            out[label] = sum(_log_softmax_at(row, t) for row, t in zip(rows, ids))
            continue
        total, logits = 0.0, first
        for k, token in enumerate(ids):
            total += _log_softmax_at(logits, token)
            if k + 1 < len(ids):
                llm.eval([token])
                logits = last_logits(llm)
        out[label] = total
    llm.n_tokens = n  # the cache holds the prompt: the next call reuses what it shares
    return out


def _logprob_label(llm, row: dict, labels: list[str], system: str | None) -> str:
    from .context import chat_prompt_ids

    messages = to_messages({**row, "output": row.get("output", "")}, system)["messages"][:-1]
    scores = label_logprobs(llm, chat_prompt_ids(llm, messages), labels)
    return max(scores, key=scores.get)


def evaluate_by_logprob(llm, rows: list[dict], labels: list[str], system: str | None = None,
                        progress: bool = True, desc: str = "log-prob") -> dict:
    """Like :func:`evaluate`, but the prediction is the label with the highest log-probability
    after the chat prompt (:func:`label_logprobs`), so every answer has a label."""
    start = time.perf_counter()
    preds = [_logprob_label(llm, row, labels, system) for row in _rows(rows, progress, desc)]
    return _report(rows, preds, labels, time.perf_counter() - start)


def evaluate_both(llm, rows: list[dict], labels: list[str], system: str | None = None,
                  progress: bool = True, desc: str = "chat y log-prob") -> tuple[dict, dict]:
    """``(evaluate(...), evaluate_by_logprob(...))`` reading each prompt once.

    For each review the model first answers (:func:`classify`); the KV cache then holds the
    prompt, so :func:`label_logprobs` evaluates only its last token and the labels instead of
    the whole review again. Same predictions as the two separate calls (tested); each report's
    seconds per example count its own part.
    """
    chat, logprob = [], []
    chat_s = logprob_s = 0.0
    for row in _rows(rows, progress, desc):
        start = time.perf_counter()
        chat.append(classify(llm, row, labels, system))
        middle = time.perf_counter()
        logprob.append(_logprob_label(llm, row, labels, system))
        chat_s += middle - start
        logprob_s += time.perf_counter() - middle
    chat_report = _report(rows, [p for p, _ in chat], labels, chat_s)
    chat_report["respuestas"] = [t for _, t in chat]
    return chat_report, _report(rows, logprob, labels, logprob_s)
