"""Classifying by label log-probability (chapter 06's fair baseline), on the bundled model."""

import numpy as np
import pytest

import course_utils as cu
from course_utils.context import chat_prompt_ids
from course_utils.evaluation import evaluate_by_logprob, label_logprobs
from course_utils.sft_data import SENTIMENT_LABELS, SENTIMENT_SYSTEM, to_messages

ROW = {"instruction": "Clasifica el sentimiento de la reseña como POSITIVO, NEGATIVO o NEUTRAL.",
       "input": "Llegó roto y nadie me contesta.", "output": "NEGATIVO"}


@pytest.fixture(scope="module")
def llm():
    return cu.load_llm(n_ctx=256)


@pytest.fixture(scope="module")
def all_logits():
    """A second copy that keeps every position's logits: an independent way to read them."""
    return cu.load_llm(n_ctx=256, logits_all=True)


def prompt_ids(llm, row=ROW):
    return chat_prompt_ids(llm, to_messages(row, SENTIMENT_SYSTEM)["messages"][:-1])


def fresh_logprob(llm, prompt, label):
    """The same quantity read from scratch: prompt and label in one pass, nothing reused."""
    ids = llm.tokenize(label.encode(), add_bos=False, special=False)
    llm.reset()
    llm.eval(prompt + ids)
    logits = llm.scores[len(prompt) - 1:len(prompt) - 1 + len(ids)].astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    return float(logp[np.arange(len(ids)), ids].sum())


def test_label_logprobs_reuse_the_prompt_and_match_a_fresh_pass(llm, all_logits):
    prompt = prompt_ids(llm)
    scores = label_logprobs(llm, prompt, SENTIMENT_LABELS)
    assert set(scores) == set(SENTIMENT_LABELS)
    assert all(s < 0 for s in scores.values())
    # the second and third labels are read after the first was forgotten: same numbers as fresh
    for label in SENTIMENT_LABELS:
        # alone, from an empty cache: exactly the same computation
        alone = label_logprobs(llm, prompt, [label])[label]
        assert scores[label] == pytest.approx(alone, abs=1e-5)
        # read another way (prompt and label in one batch, every position's logits kept):
        # the same up to llama.cpp's batch-size-dependent rounding (~0.03 measured)
        assert scores[label] == pytest.approx(fresh_logprob(all_logits, prompt, label), abs=0.15)
    # the three labels are different strings: different probabilities
    assert len({round(s, 4) for s in scores.values()}) == 3


def test_prompt_ids_are_what_the_chat_completion_reads(llm):
    messages = to_messages(ROW, SENTIMENT_SYSTEM)["messages"][:-1]
    out = llm.create_chat_completion(messages=messages, max_tokens=1, temperature=0)
    assert out["usage"]["prompt_tokens"] == len(prompt_ids(llm))


def test_evaluate_by_logprob_always_gives_a_label(llm):
    rows = [ROW, {**ROW, "input": "Me encanta, funciona de maravilla.", "output": "POSITIVO"}]
    report = evaluate_by_logprob(llm, rows, SENTIMENT_LABELS, SENTIMENT_SYSTEM, progress=False)
    assert report["sin etiqueta"] == 0
    assert all(p in SENTIMENT_LABELS for p in report["predicciones"])


def test_prompt_ids_with_the_ggufs_own_jinja_template(llm):
    """A file llama-cpp-python does not recognise (chapter 06's export) uses its Jinja template."""
    plain = cu.load_llm(str(cu.models.bundled_model_path()), n_ctx=256)
    messages = to_messages(ROW, SENTIMENT_SYSTEM)["messages"][:-1]
    out = plain.create_chat_completion(messages=messages, max_tokens=1, temperature=0)
    assert out["usage"]["prompt_tokens"] == len(chat_prompt_ids(plain, messages))
    assert plain.chat_format == "chat_template.default"
