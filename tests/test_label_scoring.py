"""Classifying by label log-probability (chapter 06's fair baseline), on the bundled model."""

import numpy as np
import pytest

import course_utils as cu
from course_utils.context import chat_prompt_ids
from course_utils.evaluation import evaluate_by_logprob, label_logprobs, last_logits
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
    llm.reset()
    scores = label_logprobs(llm, prompt, SENTIMENT_LABELS)
    assert set(scores) == set(SENTIMENT_LABELS)
    assert all(s < 0 for s in scores.values())
    # the second and third labels are read after the first was forgotten: same numbers as fresh
    for label in SENTIMENT_LABELS:
        # alone, from an empty cache: exactly the same computation
        llm.reset()
        alone = label_logprobs(llm, prompt, [label])[label]
        assert scores[label] == pytest.approx(alone, abs=1e-5)
        # read another way (prompt and label in one batch, every position's logits kept):
        # the same up to llama.cpp's batch-size-dependent rounding (~0.03 measured)
        assert scores[label] == pytest.approx(fresh_logprob(all_logits, prompt, label), abs=0.15)
    # the three labels are different strings: different probabilities
    assert len({round(s, 4) for s in scores.values()}) == 3


def test_last_logits_are_the_last_row_of_every_positions_logits(llm, all_logits):
    """A model loaded without ``logits_all`` keeps only the last position: ``last_logits`` reads
    it, and it is what a model that keeps every position has in its last row."""
    prompt = prompt_ids(llm)
    for model in (llm, all_logits):
        model.reset()
        model.eval(prompt)
    last = last_logits(llm)
    assert last.shape == (llm.n_vocab(),)
    reference = all_logits.scores[len(prompt) - 1]
    # the same logits up to llama.cpp's rounding (two contexts, same batch)
    np.testing.assert_allclose(last, reference, rtol=0, atol=0.05)
    assert last.argmax() == reference.argmax()
    np.testing.assert_allclose(last_logits(all_logits), reference, rtol=0, atol=1e-6)
    llm.eval(prompt[:1])  # one more token: the last position moves with it
    assert not np.allclose(last_logits(llm), last)


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


def test_the_next_review_reuses_the_shared_prompt_and_scores_as_from_scratch(llm, all_logits):
    """Only the tokens after the shared system prompt and instruction are read again."""
    other = {**ROW, "input": "Me encanta, funciona de maravilla."}
    first, second = prompt_ids(llm), prompt_ids(llm, other)
    shared = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
    for model in (llm, all_logits):
        model.reset()
        label_logprobs(model, first, SENTIMENT_LABELS)
        evaluated = []
        real_eval = model.eval
        model.eval = lambda tokens: (evaluated.extend(tokens), real_eval(tokens))[1]
        try:
            reused = label_logprobs(model, second, SENTIMENT_LABELS)
        finally:
            del model.eval
        labels_read = sum(len(model.tokenize(label.encode(), add_bos=False, special=False)) - 1
                          for label in SENTIMENT_LABELS)
        assert len(evaluated) == len(second) - shared + labels_read
        model.reset()
        scratch = label_logprobs(model, second, SENTIMENT_LABELS)
        for label in SENTIMENT_LABELS:
            assert reused[label] == pytest.approx(scratch[label], abs=0.05)


def test_with_every_logit_kept_a_label_is_read_in_one_call(llm, all_logits):
    """logits_all=True: each label's tokens in one eval, same numbers as one token at a time."""
    assert all_logits.keeps_all_logits and not llm.keeps_all_logits
    prompt = prompt_ids(llm)
    llm.reset()
    all_logits.reset()
    one_at_a_time = label_logprobs(llm, prompt, SENTIMENT_LABELS)
    calls = []
    real_eval = all_logits.eval
    all_logits.eval = lambda tokens: (calls.append(len(tokens)), real_eval(tokens))[1]
    try:
        batched = label_logprobs(all_logits, prompt, SENTIMENT_LABELS)
    finally:
        del all_logits.eval
    assert len(calls) == 1 + len(SENTIMENT_LABELS)  # the prompt, then one call per label
    for label in SENTIMENT_LABELS:
        assert batched[label] == pytest.approx(one_at_a_time[label], abs=0.15)
    assert max(batched, key=batched.get) == max(one_at_a_time, key=one_at_a_time.get)


def test_evaluate_both_reads_each_prompt_once_with_the_same_answers(all_logits):
    """Chapter 06's combined pass: the chat answer, then the labels, the prompt read once."""
    from course_utils.evaluation import evaluate, evaluate_both

    rows = [ROW, {**ROW, "input": "Me encanta, funciona de maravilla.", "output": "POSITIVO"},
            {**ROW, "input": "Lo recibí el martes, en una caja marrón.", "output": "NEUTRAL"}]
    args = (rows, SENTIMENT_LABELS, SENTIMENT_SYSTEM)

    def tokens_evaluated(run):
        evaluated = []
        real_eval = all_logits.eval
        all_logits.eval = lambda tokens: (evaluated.extend(tokens), real_eval(tokens))[1]
        try:
            all_logits.reset()
            return run(), len(evaluated)
        finally:
            del all_logits.eval

    (chat, by_logprob), n_both = tokens_evaluated(lambda: evaluate_both(all_logits, *args,
                                                                        progress=False))
    alone_chat, n_chat = tokens_evaluated(lambda: evaluate(all_logits, *args, progress=False))
    alone_logprob, n_logprob = tokens_evaluated(
        lambda: evaluate_by_logprob(all_logits, *args, progress=False))
    assert chat["respuestas"] == alone_chat["respuestas"]
    assert chat["predicciones"] == alone_chat["predicciones"]
    assert by_logprob["predicciones"] == alone_logprob["predicciones"]
    assert by_logprob["sin etiqueta"] == 0 and by_logprob["accuracy"] == alone_logprob["accuracy"]
    # after the answer only the prompt's last token and the labels are evaluated
    labels_read = sum(len(all_logits.tokenize(label.encode(), add_bos=False, special=False)) - 1
                      for label in SENTIMENT_LABELS)
    assert n_both == n_chat + len(rows) * (1 + labels_read)
    assert n_both < n_chat + n_logprob
