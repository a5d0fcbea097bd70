"""The evaluation harness (chapter 08): quality, latency and speed from one run."""

import pytest

import course_utils as cu
from course_utils import harness
from course_utils.harness import Item, Report, Task, run_task
from course_utils.sft_data import SENTIMENT_LABELS, SENTIMENT_SYSTEM, held_out_split


class FakeLLM:
    """Streams a fixed answer per prompt, in pieces, like llama-cpp-python."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def _pieces(self, key):
        text = self.answers[key]
        return [text[i:i + 3] for i in range(0, len(text), 3)]

    def create_chat_completion(self, messages, max_tokens, temperature, stream):
        assert stream and temperature == 0
        self.calls.append(("chat", max_tokens))
        yield {"choices": [{"delta": {"role": "assistant"}}]}
        for piece in self._pieces(messages[-1]["content"]):
            yield {"choices": [{"delta": {"content": piece}}]}

    def create_completion(self, prompt, max_tokens, temperature, stream):
        self.calls.append(("completion", max_tokens))
        for piece in self._pieces(prompt):
            yield {"choices": [{"text": piece}]}


def test_item_needs_exactly_one_kind_of_prompt():
    with pytest.raises(ValueError):
        Item("POSITIVO")
    with pytest.raises(ValueError):
        Item("POSITIVO", messages=({"role": "user", "content": "x"},), prompt="x")


def test_run_task_scores_and_times_every_item():
    items = (
        Item("POSITIVO", messages=({"role": "user", "content": "a"},)),
        Item("NEGATIVO", messages=({"role": "user", "content": "b"},)),
        Item("NEUTRAL", prompt="c"),
        Item("NEUTRAL", prompt="d"),
    )
    llm = FakeLLM({"a": "POSITIVO.", "b": "Creo que POSITIVO", "c": "NEUTRAL", "d": "no sé"})
    task = Task("t", items, tuple(SENTIMENT_LABELS), max_tokens=5)
    report = run_task(llm, task, "falso", progress=False)
    assert [o.predicted for o in report.outcomes] == ["POSITIVO", "POSITIVO", "NEUTRAL", None]
    assert llm.calls == [("chat", 5), ("chat", 5), ("completion", 5), ("completion", 5)]
    summary = report.summary()
    assert summary["modelo"] == "falso"
    assert summary["exactitud"] == 0.5 and summary["sin etiqueta"] == 1
    assert 0 <= summary["IC 95 % mín."] <= 0.5 <= summary["IC 95 % máx."] <= 1
    assert all(0 <= o.ttft <= o.seconds for o in report.outcomes)
    assert summary["latencia p95 (ms)"] >= summary["latencia p50 (ms)"] >= 0
    assert [o.tokens for o in report.outcomes] == [3, 6, 3, 2]


def test_summary_without_generated_tokens_is_nan_not_a_crash():
    report = Report("m", "t", ("A", "B"))
    report.outcomes.append(harness.Outcome("A", "A", "A", 0.1, 0.1, 1))
    assert report.summary()["tokens/s"] != report.summary()["tokens/s"]  # NaN


def test_sentiment_tasks_build_the_course_prompts():
    rows = cu.sft_data.sentiment_dataset()[:5]
    chat = harness.sentiment_chat_task(rows, SENTIMENT_LABELS, SENTIMENT_SYSTEM)
    assert len(chat.items) == 5 and chat.items[0].messages[0]["content"] == SENTIMENT_SYSTEM
    assert chat.items[0].messages[-1]["role"] == "user"
    assert rows[0]["input"] in chat.items[0].messages[-1]["content"]
    few = harness.sentiment_few_shot_task(rows, SENTIMENT_LABELS, rows[:2])
    prompts = [i.prompt for i in few.items]
    shared = cu.batching.common_prefix_length([list(p) for p in prompts])
    assert shared > len(prompts[0]) // 2  # the examples come first, the same for all
    assert all(p.rstrip().endswith(":") for p in prompts)


def test_harness_on_the_bundled_model():
    rows = cu.sft_data.sentiment_dataset()[:3]
    llm = cu.load_llm(n_ctx=512)
    task = harness.sentiment_few_shot_task(rows, SENTIMENT_LABELS, rows[3:6])
    summary = run_task(llm, task, "SmolLM2", progress=False).summary()
    assert summary["latencia p50 (ms)"] > 0 and summary["TTFT p50 (ms)"] > 0


def test_held_out_split_is_reproducible_and_disjoint():
    rows = cu.sft_data.sentiment_dataset()
    train, val, test, held_out = held_out_split(rows)
    assert (train, val, test, held_out) == held_out_split(rows)
    assert len(held_out) == 6 and len(train) + len(val) + len(test) == len(rows)
    assert not {r["template"] for r in train + val} & (held_out | {"manual"})
    assert {r["output"] for r in test} == set(SENTIMENT_LABELS)
    assert held_out_split(rows, seed=1)[3] != held_out
