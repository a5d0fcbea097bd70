import pytest

import course_utils as cu
from course_utils import metrics as M
from course_utils import presets as P
from course_utils import stats as S


def test_seed_presets_are_all_there_and_valid():
    assert set(P.PRESETS) == {"factual", "resumen_ejecutivo", "marketing", "brainstorming",
                              "chatbot", "analisis_datos", "codigo", "storytelling"}
    assert P.get_preset("marketing").kwargs() == dict(
        temperature=0.8, top_k=40, top_p=0.9, max_tokens=150, min_p=0.05, repeat_penalty=1.0)


@pytest.mark.parametrize("bad, name", [
    (dict(temperature=-0.1), "temperature"), (dict(top_p=0), "top_p"), (dict(top_p=1.2), "top_p"),
    (dict(top_k=-1), "top_k"), (dict(top_k=2.5), "top_k"), (dict(max_tokens=0), "max_tokens"),
    (dict(min_p=1.5), "min_p"), (dict(repeat_penalty=0), "repeat_penalty"),
    (dict(presence_penalty=3), "presence_penalty"), (dict(top_k=True), "top_k"),
])
def test_invalid_values_name_the_parameter_and_range(bad, name):
    with pytest.raises(P.InvalidParameterError, match=rf"^{name}=.*debe ser"):
        P.validate_params(**bad)


def test_presets_validate_on_creation():
    with pytest.raises(P.InvalidParameterError, match="top_p"):
        P.DecodingPreset("roto", "top_p fuera de rango", top_p=0)


def test_redundancies():
    usual = P.DecodingPreset("receta", "la receta habitual", temperature=0.1, top_k=1, top_p=0.5)
    assert "top_k=1" in usual.redundancies()[0]
    assert P.get_preset("marketing").redundancies() == []
    note = P.get_preset("chatbot").with_changes(temperature=0).redundancies()[0]
    assert "temperature=0" in note and "top_k=30, top_p=0.85, min_p=0.05 no tienen" in note
    assert "top_p=0.5 no tiene efecto" in P.get_preset("factual").with_changes(
        top_p=0.5).redundancies()[0]


def test_no_preset_sets_a_parameter_that_does_nothing():
    # the usual factual/code recipe (T=0.1 with top_k=1) is greedy: the presets say so plainly
    assert {name: p.redundancies() for name, p in P.PRESETS.items()} == {
        name: [] for name in P.PRESETS}
    for name in ("factual", "codigo"):
        p = P.get_preset(name)
        assert p.temperature == 0 and (p.top_k, p.top_p, p.min_p) == (0, 1.0, 0.0)


def test_unknown_preset():
    with pytest.raises(P.InvalidParameterError, match="Disponibles"):
        P.get_preset("poesia")


def test_check_fits():
    llm = cu.load_llm(n_ctx=256)
    P.check_fits(llm, "Hello", max_tokens=200)
    with pytest.raises(P.InvalidParameterError, match="max_tokens=300 no cabe"):
        P.check_fits(llm, "Hello", max_tokens=300)


def test_metrics():
    assert M.distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert M.distinct_n([""], 2) == 0.0
    assert M.unique_fraction(["x", "x ", "y"]) == pytest.approx(2 / 3)
    assert M.repetition_rate("the cat sat the cat sat the cat sat") == pytest.approx(4 / 7)
    assert M.repetition_rate("one two three four") == 0.0


def test_sample_many_is_reproducible_and_ab_test_runs(capsys):
    llm = cu.load_llm(n_ctx=512)
    a = P.sample_many(llm, "Name a color.", 2, max_tokens=8, temperature=1.0, progress=False)
    b = P.sample_many(llm, "Name a color.", 2, max_tokens=8, temperature=1.0, progress=False)
    assert a == b
    rows = P.ab_test(llm, P.get_preset("factual"), P.get_preset("brainstorming"),
                     ["Name a color."], samples=3, max_tokens=8)
    assert [r["preset"] for r in rows] == ["factual", "brainstorming"]
    assert rows[0]["respuestas distintas"] == pytest.approx(1 / 3)  # greedy: always the same
    assert len(set(rows[0]["textos"][0])) == 1 and "acierto" not in rows[0]
    assert "distinct-2" in capsys.readouterr().out


class ScriptedLlm:
    """Replies chosen by (prompt, seed, temperature): accuracy is known in advance."""

    def __init__(self, replies):
        self.replies, self.calls = replies, []

    def create_chat_completion(self, messages, seed, temperature, **params):
        prompt = messages[0]["content"]
        self.calls.append((prompt, seed, temperature))
        text = self.replies(prompt, seed, temperature)
        return {"choices": [{"message": {"content": text}}]}


def test_ab_test_reports_accuracy_with_wilson_interval_next_to_diversity(capsys):
    def replies(prompt, seed, temperature):
        if temperature == 0:  # greedy: the right answer, always the same text
            return {"Capital of France?": "Paris.", "Legs of a spider?": "Eight legs."}[prompt]
        return ["Paris, of course!", "Maybe Lyon", "It is 14 legs", "Eight, I think"][seed % 4]

    llm = ScriptedLlm(replies)
    rows = P.ab_test(llm, P.get_preset("factual"), P.get_preset("marketing"),
                     ["Capital of France?", "Legs of a spider?"], samples=2, seed=0,
                     answers=[["Paris"], ["eight", "8"]])
    factual, marketing = rows
    assert (factual["aciertos"], factual["n"], factual["acierto"]) == (4, 4, 1.0)
    # marketing, seeds 0 and 1: "Paris, of course!" right, "Maybe Lyon" wrong for France;
    # "Paris, of course!" and "Maybe Lyon" are both wrong for the spider (no "eight"/"8")
    assert (marketing["aciertos"], marketing["n"]) == (1, 4)
    assert marketing["intervalo 95 %"] == pytest.approx(S.wilson_interval(1, 4))
    assert factual["intervalo 95 %"] == pytest.approx(S.wilson_interval(4, 4))
    assert factual["respuestas distintas"] == 0.5 and marketing["respuestas distintas"] == 1.0
    assert marketing["textos"] == [["Paris, of course!", "Maybe Lyon"]] * 2
    # same prompts and seeds for both presets
    assert [c[:2] for c in llm.calls[:4]] == [c[:2] for c in llm.calls[4:]]
    out = capsys.readouterr().out
    assert "acierto (IC 95 %)" in out and "4/4" in out and "1/4" in out


def test_ab_test_custom_quality_and_mismatched_answers():
    llm = ScriptedLlm(lambda prompt, seed, temperature: "x" * (seed + 1))
    rows = P.ab_test(llm, P.get_preset("factual"), P.get_preset("chatbot"), ["p"], samples=3,
                     answers=[3], is_correct=lambda text, n: len(text) >= n, show=False)
    assert [r["aciertos"] for r in rows] == [1, 1]  # seeds 0, 1, 2 -> lengths 1, 2, 3
    with pytest.raises(ValueError, match="una lista de respuestas válidas por prompt"):
        P.ab_test(llm, P.get_preset("factual"), P.get_preset("chatbot"), ["p", "q"],
                  answers=[["a"]], show=False)


def test_classification_report():
    gold = ["POS", "POS", "NEG", "NEU"]
    pred = ["POS", "NEG", "NEG", None]
    r = M.classification_report(gold, pred, ["POS", "NEG", "NEU"])
    assert r["accuracy"] == 0.5 and r["sin etiqueta"] == 1
    assert r["POS"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "n": 2}
    assert r["NEG"]["precision"] == 0.5 and r["NEU"]["f1"] == 0.0
    with pytest.raises(ValueError):
        M.classification_report(["a"], [], ["a"])
