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
