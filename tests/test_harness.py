"""The evaluation harness (chapter 08): quality, latency and speed from one run."""

import pytest

import course_utils as cu
from course_utils import harness
from course_utils.harness import Item, Report, Task, run_task
from course_utils.sft_data import SENTIMENT_LABELS, SENTIMENT_SYSTEM, held_out_split


class FakeLLM:
    """Streams a fixed answer per prompt, in pieces, like llama-cpp-python; without ``stream``,
    answers the whole text at once (what ``evaluation.classify`` asks for)."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def _answer(self, content):
        return next(text for key, text in self.answers.items() if content.endswith(key))

    def _pieces(self, text):
        return [text[i:i + 3] for i in range(0, len(text), 3)]

    def create_chat_completion(self, messages, max_tokens, temperature, stream=False):
        assert temperature == 0
        self.calls.append(("chat", max_tokens, stream))
        text = self._answer(messages[-1]["content"])
        if not stream:
            return {"choices": [{"message": {"role": "assistant", "content": text}}]}
        return self._stream_chat(text)

    def _stream_chat(self, text):
        yield {"choices": [{"delta": {"role": "assistant"}}]}
        for piece in self._pieces(text):
            yield {"choices": [{"delta": {"content": piece}}]}

    def create_completion(self, prompt, max_tokens, temperature, stream=False):
        assert temperature == 0
        self.calls.append(("completion", max_tokens, stream))
        text = self._answer(prompt)
        if not stream:
            return {"choices": [{"text": text}]}
        return ({"choices": [{"text": piece}]} for piece in self._pieces(text))


def _row(text, label):
    return {"instruction": "Clasifica.", "input": text, "output": label}


def test_item_needs_exactly_one_kind_of_prompt():
    with pytest.raises(ValueError):
        Item("POSITIVO")
    with pytest.raises(ValueError):
        Item("POSITIVO", row=_row("x", "POSITIVO"), prompt="x")


def test_run_task_scores_and_times_every_item():
    items = (
        Item("POSITIVO", row=_row("a", "POSITIVO")),
        Item("NEGATIVO", row=_row("b", "NEGATIVO")),
        Item("NEUTRAL", prompt="c"),
        Item("NEUTRAL", prompt="d"),
    )
    llm = FakeLLM({"a": "POSITIVO.", "b": "Creo que POSITIVO", "c": "NEUTRAL", "d": "no sé"})
    task = Task("t", items, tuple(SENTIMENT_LABELS), system="S", max_tokens=5)
    report = run_task(llm, task, "falso", progress=False)
    assert [o.predicted for o in report.outcomes] == ["POSITIVO", "POSITIVO", "NEUTRAL", None]
    assert [o.text for o in report.outcomes] == ["POSITIVO.", "Creo que POSITIVO", "NEUTRAL",
                                                 "no sé"]
    assert llm.calls == [("chat", 5, True), ("chat", 5, True), ("completion", 5, True),
                         ("completion", 5, True)]
    summary = report.summary()
    assert summary["modelo"] == "falso"
    assert summary["exactitud"] == 0.5 and summary["sin etiqueta"] == 1
    assert 0 <= summary["IC 95 % mín."] <= 0.5 <= summary["IC 95 % máx."] <= 1
    assert all(0 <= o.ttft <= o.seconds for o in report.outcomes)
    assert summary["latencia p95 (ms)"] >= summary["latencia p50 (ms)"] >= 0
    assert [o.tokens for o in report.outcomes] == [3, 6, 3, 2]


def test_chat_items_are_asked_by_evaluation_classify():
    """One evaluator: the harness's chat answer and label are evaluation.classify's, streamed."""
    rows = [_row("a", "POSITIVO"), _row("b", "NEGATIVO")]
    answers = {"a": "Es POSITIVO", "b": "negativo, creo"}
    task = harness.sentiment_chat_task(rows, SENTIMENT_LABELS, SENTIMENT_SYSTEM)
    report = run_task(FakeLLM(answers), task, "falso", progress=False)
    plain = [cu.evaluation.classify(FakeLLM(answers), r, list(SENTIMENT_LABELS), SENTIMENT_SYSTEM)
             for r in rows]
    assert [(o.predicted, o.text) for o in report.outcomes] == plain
    evaluated = cu.evaluation.evaluate(FakeLLM(answers), rows, list(SENTIMENT_LABELS),
                                       SENTIMENT_SYSTEM, progress=False)
    quality = report.quality
    assert evaluated["predicciones"] == [o.predicted for o in report.outcomes]
    assert all(evaluated[k] == quality[k] for k in ("accuracy", "macro_f1", "accuracy_ci"))


def test_stopwatch_answers_like_the_model_and_times_it():
    timed = harness.Stopwatch(FakeLLM({"x": "POSITIVO"}))
    assert timed.last is None
    out = timed.create_completion("x", max_tokens=3, temperature=0)
    assert out["choices"][0]["text"] == "POSITIVO"
    ttft, seconds, tokens = timed.last
    assert 0 <= ttft <= seconds and tokens == 3
    label, text = harness.classify_completion(FakeLLM({"x": " negativo"}), "x", SENTIMENT_LABELS)
    assert (label, text) == ("NEGATIVO", " negativo")


def test_summary_without_generated_tokens_is_nan_not_a_crash():
    report = Report("m", "t", ("A", "B"))
    report.outcomes.append(harness.Outcome("A", "A", "A", 0.1, 0.1, 1))
    assert report.summary()["tokens/s"] != report.summary()["tokens/s"]  # NaN


def test_sentiment_tasks_build_the_course_prompts():
    rows = cu.sft_data.sentiment_dataset()[:5]
    chat = harness.sentiment_chat_task(rows, SENTIMENT_LABELS, SENTIMENT_SYSTEM)
    assert len(chat.items) == 5 and chat.system == SENTIMENT_SYSTEM
    assert [i.row for i in chat.items] == rows and [i.expected for i in chat.items] == [
        r["output"] for r in rows]
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
