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
    # logits_all=True: next_token_logits reads llm.scores, llama-cpp-python's public logits
    return cu.load_llm(n_ctx=512, logits_all=True)


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

    llm = cu.load_llm(str(standin.standin_path("tied", folder=tmp_path)), n_ctx=256,
                      logits_all=True)
    logits = S.next_token_logits(llm, PROMPT)
    params = dict(temperature=1.0, top_k=3, top_p=1.0, min_p=0.0)
    kept = set(np.flatnonzero(S.llama_cpp_distribution(logits, **params).kept).tolist())
    drawn = {S.sample_next_token(llm, PROMPT, seed=s, **params) for s in range(12)}
    assert drawn <= kept and len(drawn) > 1


def test_next_token_logits_needs_logits_all():
    plain = cu.load_llm(n_ctx=256)
    with pytest.raises(S.LogitsNotKeptError, match="logits_all=True"):
        S.next_token_logits(plain, PROMPT)
    plain.close()


def test_next_token_logits_are_llama_cpps_logprobs(llm, logits):
    """The same distribution llama-cpp-python reports as logprobs for the first answer token."""
    ids = S.prompt_tokens(llm, PROMPT)
    out = llm.create_completion(ids, max_tokens=1, temperature=0, logprobs=5)
    reported = sorted(out["choices"][0]["logprobs"]["top_logprobs"][0].values(), reverse=True)
    ours = np.sort(np.log(S.softmax(logits)))[::-1][: len(reported)]
    assert np.allclose(reported, ours, atol=1e-3)


def _dist(probs):
    return S.Distribution(np.asarray(probs, dtype=np.float64), np.asarray(probs) > 0)


def test_compare_draws_accepts_samples_of_the_distribution():
    dist = _dist([0.5, 0.3, 0.15, 0.05, 0.0])
    rng = np.random.default_rng(0)
    draws = rng.choice(5, size=2000, p=dist.probs).tolist()
    check = S.compare_draws(dist, draws)
    assert check.ok and check.n_kept == 4 and check.n_drawn == 4 and check.outside == 0
    assert [r["id"] for r in check.rows] == [0, 1, 2, 3]


def test_compare_draws_rejects_wrong_frequencies_sets_and_counts():
    dist = _dist([0.5, 0.3, 0.15, 0.05, 0.0])
    rng = np.random.default_rng(1)
    # a sampler that flattens the distribution (temperature applied twice, say)
    flat = rng.choice(5, size=2000, p=[0.3, 0.3, 0.2, 0.2, 0.0]).tolist()
    assert not S.compare_draws(dist, flat).ok
    # a draw outside the kept set
    outside = S.compare_draws(dist, rng.choice(5, size=2000, p=dist.probs).tolist() + [4])
    assert outside.outside == 1 and not outside.ok
    # a sampler that keeps fewer candidates (drops the 15 % token): its absence is caught
    fewer = rng.choice(5, size=2000, p=[0.5 / 0.85, 0.3 / 0.85, 0.0, 0.05 / 0.85, 0.0]).tolist()
    check = S.compare_draws(dist, fewer)
    assert check.missing == [2] and not check.ok


def test_compare_draws_groups_the_improbable_tail():
    probs = np.full(1000, 0.5 / 999)
    probs[0] = 0.5
    probs /= probs.sum()
    dist = _dist(probs)
    draws = np.random.default_rng(2).choice(1000, size=400, p=probs).tolist()
    check = S.compare_draws(dist, draws)
    assert check.ok and len(check.rows) == 2 and check.rows[1]["grupo"].startswith("resto")


def test_llama_cpp_frequencies_match_numpy(llm, logits):
    """Frequencies, not only membership: 300 draws per setting against numpy's probabilities."""
    for params in (dict(temperature=1.0, top_k=3, top_p=1.0, min_p=0.0),
                   dict(temperature=5.0, top_k=0, top_p=0.5, min_p=0.0)):
        dist = S.llama_cpp_distribution(logits, **params)
        check = S.compare_draws(dist, S.draw_many(llm, PROMPT, 300, **params))
        assert check.ok, (params, check)


def test_continuation_logprobs_read_the_same_distribution(llm, logits):
    greedy = int(np.argmax(logits))
    text = llm.detokenize([greedy]).decode() + " smartwatch is"
    logp = S.continuation_logprobs(llm, PROMPT, text)
    assert logp.size == len(llm.tokenize(text.encode(), add_bos=False, special=False))
    assert np.isclose(logp[0], np.log(S.softmax(logits)[greedy]), atol=1e-4)
    assert (logp <= 0).all()
    # the model's own greedy continuation is more probable than a scrambled one
    scrambled = S.continuation_logprobs(llm, PROMPT, " is smartwatch" + text.split()[0])
    assert logp.mean() > scrambled.mean()


def test_continuation_logprobs_reuse_the_prompt_cache(llm):
    texts = ["The watch is light.", "A smartwatch for runners.", "The watch is light."]
    fresh = []
    for text in texts:
        llm.reset()
        fresh.append(S.continuation_logprobs(llm, PROMPT, text))
    reused = [S.continuation_logprobs(llm, PROMPT, text) for text in texts]
    for a, b in zip(fresh, reused):
        assert np.allclose(a, b, atol=1e-3)
    assert S.continuation_logprobs(llm, "Otra cosa.", texts[0]).shape == fresh[0].shape


@pytest.mark.parametrize("loader", ["default", "path", "standin"])
def test_prompt_tokens_are_what_create_chat_completion_sends(loader, tmp_path):
    from course_utils import standin

    if loader == "default":
        model = cu.load_llm(n_ctx=256)  # chat_format="chatml" (llama-cpp-python's own)
    elif loader == "path":
        model = cu.load_llm(str(cu.bundled_model_path()), n_ctx=256)  # the GGUF's template
    else:
        model = cu.load_llm(str(standin.standin_path("tied", folder=tmp_path)), n_ctx=256)
    ids = S.prompt_tokens(model, PROMPT)
    model.create_chat_completion(messages=[{"role": "user", "content": PROMPT}], max_tokens=1,
                                 temperature=0)
    assert model.input_ids[: len(ids)].tolist() == ids
    assert ids.count(model.token_bos()) <= 1 or not cu.prompts.adds_bos(model)
    model.close()


class _TinyVocab:
    def detokenize(self, ids, special=False):
        return [b" a", b"b", b"\n", b"\xc3", b"e"][ids[0]]


def test_frequency_check_summary_and_worst():
    dist = S.llama_cpp_distribution(LOGITS, temperature=1, top_k=0, top_p=1, min_p=0)
    draws = [0] * 50 + [1] * 20 + [2] * 15 + [3] * 10 + [4] * 5  # exactly the probabilities
    check = S.compare_draws(dist, draws)
    assert check.worst == pytest.approx(0, abs=1e-6)
    assert check.summary() == {"numpy conserva": 5, "llama.cpp sacó (distintos)": 5,
                               "fuera del conjunto": 0, "grupos comparados": len(check.rows),
                               "peor |f − p| / tolerancia": 0.0}
    off = S.compare_draws(dist, [1] * 100)  # never the top token
    assert off.worst > 1 and not off.ok


def test_plot_candidates_draws_final_and_original_probabilities():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = S.softmax(LOGITS)
    dist = S.llama_cpp_distribution(LOGITS, temperature=1, top_k=2, top_p=1, min_p=0)
    fig, ax = plt.subplots()
    S.plot_candidates(ax, _TinyVocab(), dist, probs, "top_k = 2", n_show=4)
    final, original = ax.containers
    assert [b.get_height() for b in final] == pytest.approx([0.5 / 0.7, 0.2 / 0.7, 0, 0])
    assert [b.get_height() for b in original] == pytest.approx([0.5, 0.2, 0.15, 0.1])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["␣a", "b", "↵", "⟨C3⟩"]
    assert ax.get_title() == "top_k = 2 · 2 candidatos"
    plt.close(fig)
