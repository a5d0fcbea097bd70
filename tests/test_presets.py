import pytest

import course_utils as cu
from course_utils import metrics as M
from course_utils import presets as P


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
    assert "top_k=1" in P.get_preset("factual").redundancies()[0]
    assert P.get_preset("marketing").redundancies() == []
    assert "temperature=0" in P.get_preset("chatbot").with_changes(temperature=0).redundancies()[0]


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
    assert "distinct-2" in capsys.readouterr().out


def test_classification_report():
    gold = ["POS", "POS", "NEG", "NEU"]
    pred = ["POS", "NEG", "NEG", None]
    r = M.classification_report(gold, pred, ["POS", "NEG", "NEU"])
    assert r["accuracy"] == 0.5 and r["sin etiqueta"] == 1
    assert r["POS"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "n": 2}
    assert r["NEG"]["precision"] == 0.5 and r["NEU"]["f1"] == 0.0
    with pytest.raises(ValueError):
        M.classification_report(["a"], [], ["a"])
