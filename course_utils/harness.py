"""A small evaluation harness: prompts + expected answers -> quality, latency and speed.

Accuracy alone hides what a user of a local model feels: how long until the first word
appears (time to first token), how long a whole answer takes (median and 95th percentile, not
just the mean) and how fast tokens come. :func:`run_task` measures all of it on the same items,
so several models (or prompts) can be compared in one table.

It is not a second evaluator: it is a front-end of :mod:`course_utils.evaluation` (chapter 06).
A chat item is asked with :func:`course_utils.evaluation.classify` itself (the training prompt
format, greedy, :func:`~course_utils.prompts.parse_label` to read the label), through a
stopwatch that streams the same request to time it; a completion item (few-shot, for base
models) is asked the same way with :func:`classify_completion`. The predictions become a report
with :func:`course_utils.metrics.classification_report`, as in ``evaluation.evaluate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import evaluation
from .metrics import classification_report
from .perf import percentile
from .prompts import few_shot_prompt, parse_label


@dataclass(frozen=True)
class Item:
    """One test case and its expected label: a dataset ``row`` (asked as a chat, the way
    :func:`course_utils.evaluation.classify` asks it) or a completion ``prompt``."""

    expected: str
    row: dict | None = None
    prompt: str | None = None

    def __post_init__(self):
        if (self.row is None) == (self.prompt is None):
            raise ValueError("Un Item lleva row (chat) o prompt (completado), uno de los dos.")


@dataclass(frozen=True)
class Task:
    """A labelled task: items, the allowed labels, the system prompt of its chat items."""

    name: str
    items: tuple[Item, ...]
    labels: tuple[str, ...]
    system: str | None = None
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


class Stopwatch:
    """A llama-cpp-python model seen through a stopwatch.

    It answers ``create_chat_completion`` and ``create_completion`` like the model does without
    ``stream`` (same text), but asks the model with ``stream=True`` and keeps, in ``last``, the
    seconds to the first non-empty piece, the seconds to the end and the pieces generated.
    """

    def __init__(self, llm):
        self.llm = llm
        self.last: tuple[float, float, int] | None = None  #: (ttft, seconds, tokens)

    def _timed(self, pieces) -> str:
        start = time.perf_counter()
        first, out = None, []
        for piece in pieces:
            if piece and first is None:
                first = time.perf_counter()
            out.append(piece)
        end = time.perf_counter()
        self.last = ((first or end) - start, end - start, sum(1 for p in out if p))
        return "".join(out)

    def create_chat_completion(self, messages, **kwargs) -> dict:
        chunks = self.llm.create_chat_completion(messages=messages, stream=True, **kwargs)
        text = self._timed(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        return {"choices": [{"message": {"role": "assistant", "content": text}}]}

    def create_completion(self, prompt, **kwargs) -> dict:
        chunks = self.llm.create_completion(prompt, stream=True, **kwargs)
        return {"choices": [{"text": self._timed(c["choices"][0]["text"] for c in chunks)}]}


def classify_completion(llm, prompt: str, labels: list[str],
                        max_tokens: int = 8) -> tuple[str | None, str]:
    """:func:`course_utils.evaluation.classify` for a completion prompt (few-shot, base models):
    greedy, then ``(parsed label, raw answer)``."""
    out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0)
    text = out["choices"][0]["text"]
    return parse_label(text, labels), text


def run_item(llm, item: Item, task: Task) -> Outcome:
    """Ask one item (greedy, streamed) and time it."""
    timed = Stopwatch(llm)
    labels = list(task.labels)
    if item.row is not None:
        predicted, text = evaluation.classify(timed, item.row, labels, task.system,
                                              max_tokens=task.max_tokens)
    else:
        predicted, text = classify_completion(timed, item.prompt, labels, task.max_tokens)
    ttft, seconds, tokens = timed.last
    return Outcome(item.expected, predicted, text, seconds, ttft, tokens)


def run_task(llm, task: Task, model: str, *, progress: bool = True) -> Report:
    """Run every item of ``task`` on ``llm`` and collect a :class:`Report`."""
    items = task.items
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc=model, leave=False)
    report = Report(model, task.name, task.labels)
    for item in items:
        report.outcomes.append(run_item(llm, item, task))
    return report


# --- the course's sentiment task, in the three prompt styles of the course ---------------------

def sentiment_chat_task(rows: list[dict], labels, system: str | None) -> Task:
    """Chat prompts in the training format of chapter 06 (instruction + review), asked exactly as
    :func:`course_utils.evaluation.evaluate` asks them."""
    items = tuple(Item(r["output"], row=r) for r in rows)
    return Task("sentimiento (chat)", items, tuple(labels), system=system)


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
