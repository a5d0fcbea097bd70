"""A small evaluation harness: prompts + expected answers -> quality, latency and speed.

Accuracy alone hides what a user of a local model feels: how long until the first word
appears (time to first token), how long a whole answer takes (median and 95th percentile, not
just the mean) and how fast tokens come. :func:`run_task` measures all of it on the same items,
so several models (or prompts) can be compared in one table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .metrics import classification_report
from .perf import percentile
from .prompts import few_shot_prompt, parse_label


@dataclass(frozen=True)
class Item:
    """One test case: a chat (``messages``) or a completion ``prompt``, and the expected label."""

    expected: str
    messages: tuple[dict, ...] | None = None
    prompt: str | None = None

    def __post_init__(self):
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("Un Item lleva messages (chat) o prompt (completado), uno de los dos.")


@dataclass(frozen=True)
class Task:
    """A labelled task: items, the allowed labels and how to read a label from an answer."""

    name: str
    items: tuple[Item, ...]
    labels: tuple[str, ...]
    parse: Callable[[str, list[str]], str | None] = parse_label
    max_tokens: int = 8


@dataclass(frozen=True)
class Outcome:
    expected: str
    predicted: str | None
    text: str
    seconds: float  #: whole answer, from request to last token
    ttft: float  #: time to first token
    tokens: int  #: generated tokens (stream chunks)


@dataclass
class Report:
    """Everything measured for one model on one task."""

    model: str
    task: str
    labels: tuple[str, ...]
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def quality(self) -> dict:
        return classification_report([o.expected for o in self.outcomes],
                                     [o.predicted for o in self.outcomes], list(self.labels))

    def summary(self) -> dict:
        q = self.quality
        seconds = [o.seconds for o in self.outcomes]
        ttft = [o.ttft for o in self.outcomes]
        gen_time = sum(o.seconds - o.ttft for o in self.outcomes)
        gen_tokens = sum(max(0, o.tokens - 1) for o in self.outcomes)
        low, high = q["accuracy_ci"]  # bootstrap over the test items
        return {
            "modelo": self.model,
            "exactitud": q["accuracy"],
            "IC 95 % mín.": low,
            "IC 95 % máx.": high,
            "F1 macro": q["macro_f1"],
            "sin etiqueta": q["sin etiqueta"],
            "TTFT p50 (ms)": 1000 * percentile(ttft, 50),
            "latencia p50 (ms)": 1000 * percentile(seconds, 50),
            "latencia p95 (ms)": 1000 * percentile(seconds, 95),
            "tokens/s": gen_tokens / gen_time if gen_time > 0 else float("nan"),
        }


def _stream(llm, item: Item, max_tokens: int):
    if item.messages is not None:
        chunks = llm.create_chat_completion(messages=list(item.messages), max_tokens=max_tokens,
                                            temperature=0, stream=True)
        for chunk in chunks:
            yield chunk["choices"][0]["delta"].get("content") or ""
    else:
        for chunk in llm.create_completion(item.prompt, max_tokens=max_tokens, temperature=0,
                                           stream=True):
            yield chunk["choices"][0]["text"]


def run_item(llm, item: Item, labels, parse, max_tokens: int) -> Outcome:
    """Ask one item (greedy, streamed) and time it."""
    start = time.perf_counter()
    first = None
    pieces = []
    for piece in _stream(llm, item, max_tokens):
        if piece and first is None:
            first = time.perf_counter()
        pieces.append(piece)
    end = time.perf_counter()
    text = "".join(pieces)
    tokens = sum(1 for p in pieces if p)
    ttft = (first or end) - start
    return Outcome(item.expected, parse(text, list(labels)), text, end - start, ttft, tokens)


def run_task(llm, task: Task, model: str, *, progress: bool = True) -> Report:
    """Run every item of ``task`` on ``llm`` and collect a :class:`Report`."""
    items = task.items
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc=model, leave=False)
    report = Report(model, task.name, task.labels)
    for item in items:
        report.outcomes.append(run_item(llm, item, task.labels, task.parse, task.max_tokens))
    return report


# --- the course's sentiment task, in the three prompt styles of the course ---------------------

def sentiment_chat_task(rows: list[dict], labels, system: str | None) -> Task:
    """Chat prompts in the training format of chapter 06 (instruction + review)."""
    from .sft_data import to_messages

    items = tuple(Item(r["output"], messages=tuple(to_messages(r, system)["messages"][:-1]))
                  for r in rows)
    return Task("sentimiento (chat)", items, tuple(labels))


def sentiment_few_shot_task(rows: list[dict], labels, examples: list[dict]) -> Task:
    """Completion prompts with labelled examples first (works with base models too).

    The examples come first and are identical for every item, so llama-cpp-python reuses their
    KV cache from one item to the next (see :mod:`course_utils.batching`).
    """
    instruction = "Clasifica el sentimiento de cada reseña como " + ", ".join(labels) + "."
    shots = [(e["input"], e["output"]) for e in examples]
    items = tuple(Item(r["output"], prompt=few_shot_prompt(instruction, shots, r["input"],
                                                          input_label="Reseña"))
                  for r in rows)
    return Task("sentimiento (few-shot)", items, tuple(labels), max_tokens=4)
