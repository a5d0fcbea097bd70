"""The numpy filters, and the check that they describe what llama.cpp really samples."""

import numpy as np
import pytest

import course_utils as cu
from course_utils import sampling as S

LOGITS = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05]))


def test_softmax_and_temperature():
    p = S.softmax(LOGITS)
    assert np.allclose(p, [0.5, 0.2, 0.15, 0.1, 0.05])
    hot, cold = S.softmax(LOGITS, 2.0), S.softmax(LOGITS, 0.5)
    assert hot.max() < p.max() < cold.max()  # high T flattens, low T sharpens
    with pytest.raises(ValueError):
        S.softmax(LOGITS, 0)


def test_top_k():
    assert S.top_k_mask(LOGITS, 2).tolist() == [True, True, False, False, False]
    assert S.top_k_mask(LOGITS, 0).all() and S.top_k_mask(LOGITS, 99).all()


def test_top_p_keeps_the_token_that_crosses():
    p = S.softmax(LOGITS)
    assert S.top_p_mask(p, 0.5).tolist() == [True, False, False, False, False]
    assert S.top_p_mask(p, 0.6).tolist() == [True, True, False, False, False]
    assert S.top_p_mask(p, 0.85).sum() == 3
    assert S.top_p_mask(p, 1.0).all()
    assert S.top_p_mask(p, 0.01).sum() == 1


def test_min_p_is_relative_to_the_top_token():
    p = S.softmax(LOGITS)
    assert S.min_p_mask(p, 0.3).tolist() == [True, True, True, False, False]  # >= 0.15
    assert S.min_p_mask(p, 0).all()


def test_chain_order_filters_before_temperature():
    cold = S.llama_cpp_distribution(LOGITS, temperature=0.1, top_k=0, top_p=0.8, min_p=0)
    hot = S.llama_cpp_distribution(LOGITS, temperature=10, top_k=0, top_p=0.8, min_p=0)
    assert cold.kept.tolist() == hot.kept.tolist() == [True, True, True, False, False]
    assert np.isclose(hot.probs.sum(), 1) and (hot.probs[~hot.kept] == 0).all()


def test_greedy_and_negative_temperature():
    greedy = S.llama_cpp_distribution(LOGITS, temperature=0)
    assert greedy.greedy and greedy.n_kept == 1 and greedy.kept[0]
    assert S.llama_cpp_distribution(LOGITS, temperature=-1).n_kept == 5


# --------------------------------------------------------------------------- against llama.cpp

PROMPT = "Write a product description for a smartwatch."


@pytest.fixture(scope="module")
def llm():
    return cu.load_llm(n_ctx=512)


@pytest.fixture(scope="module")
def logits(llm):
    return S.next_token_logits(llm, PROMPT)


def first_token(llm, **params):
    out = llm.create_chat_completion(messages=[{"role": "user", "content": PROMPT}],
                                     max_tokens=1, **params)
    return out["choices"][0]["message"]["content"]


def test_greedy_matches_llama_cpp(llm, logits):
    greedy = llm.detokenize([int(np.argmax(logits))]).decode()
    assert first_token(llm, temperature=0) == greedy
    assert first_token(llm, temperature=1.0, top_k=1, seed=7) == greedy


@pytest.mark.parametrize("params", [
    dict(temperature=1.0, top_k=3, top_p=1.0, min_p=0.0),
    dict(temperature=1.0, top_k=0, top_p=0.5, min_p=0.0),
    dict(temperature=5.0, top_k=0, top_p=0.5, min_p=0.0),  # temperature applied after top_p
    dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.2),
])
def test_llama_cpp_only_draws_from_the_kept_set(llm, logits, params):
    dist = S.llama_cpp_distribution(logits, **params)
    allowed = {llm.detokenize([int(i)]).decode("utf-8", "replace") for i in np.flatnonzero(dist.kept)}
    drawn = {first_token(llm, seed=s, **params) for s in range(25)}
    assert drawn <= allowed, (drawn - allowed, dist.n_kept)
    assert len(drawn) > 1  # really sampling


def test_sample_next_token_is_llama_cpp_drawing_from_the_kept_set(llm, logits):
    """By id: a drawn token may be half a UTF-8 character (see the Llama 3 stand-in's vocabulary)."""
    greedy = int(np.argmax(logits))
    assert S.sample_next_token(llm, PROMPT, seed=0, temperature=0) == greedy
    assert S.sample_next_token(llm, PROMPT, seed=5, temperature=1.3, top_k=1) == greedy
    params = dict(temperature=1.0, top_k=0, top_p=0.5, min_p=0.0)
    kept = set(np.flatnonzero(S.llama_cpp_distribution(logits, **params).kept).tolist())
    drawn = [S.sample_next_token(llm, PROMPT, seed=s, **params) for s in range(25)]
    assert set(drawn) <= kept and len(set(drawn)) > 1
    # the same seeds give the same draws, also after another prompt filled the cache
    S.next_token_logits(llm, "Otra cosa.")
    assert drawn == [S.sample_next_token(llm, PROMPT, seed=s, **params) for s in range(25)]


def test_sample_next_token_on_the_llama3_standin(tmp_path):
    """On a 128 256-token vocabulary, where the first draws include half characters."""
    from course_utils import standin

    llm = cu.load_llm(str(standin.standin_path("tied", folder=tmp_path)), n_ctx=256)
    logits = S.next_token_logits(llm, PROMPT)
    params = dict(temperature=1.0, top_k=3, top_p=1.0, min_p=0.0)
    kept = set(np.flatnonzero(S.llama_cpp_distribution(logits, **params).kept).tolist())
    drawn = {S.sample_next_token(llm, PROMPT, seed=s, **params) for s in range(12)}
    assert drawn <= kept and len(drawn) > 1
