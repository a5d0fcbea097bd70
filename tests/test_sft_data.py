import hashlib

import pytest

from course_utils import sft_data as D

GOOD = '{"instruction": "Clasifica", "input": "Me encanta", "output": "POSITIVO"}\n'


def write(tmp_path, text, name="datos.jsonl"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_validator_reports_every_bad_line_and_never_modifies_the_file(tmp_path):
    text = (GOOD
            + "{esto no es json\n"
            + '["una", "lista"]\n'
            + '{"instruction": "Clasifica", "output": "NEGATIVO"}\n'
            + '{"instruction": "Clasifica", "input": "Regular", "output": "  "}\n'
            + GOOD
            + "\n"
            + '{"instruction": "Clasifica", "input": "Odio esto", "output": "NEGATIVO"}\n')
    path = write(tmp_path, text)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    report = D.validate_jsonl(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert [(p.line, p.kind) for p in report.problems] == [
        (2, "json"), (3, "object"), (4, "missing"), (5, "empty"), (6, "duplicate")]
    assert "duplicado de la línea 1" in str(report) and "faltan las claves input" in str(report)
    assert (report.n_lines, report.n_valid, report.ok) == (7, 2, False)


def test_read_jsonl_refuses_bad_files_listing_the_lines(tmp_path):
    path = write(tmp_path, GOOD + "{roto\n")
    with pytest.raises(D.DataFormatError, match="línea 2"):
        D.read_jsonl(path)
    with pytest.raises(D.DataFormatError, match="No encuentro"):
        D.read_jsonl(tmp_path / "nada.jsonl")


def test_messages_format(tmp_path):
    ok = D.to_messages({"instruction": "Clasifica", "input": "Genial", "output": "POSITIVO"},
                       system="Eres un clasificador.")
    assert [m["role"] for m in ok["messages"]] == ["system", "user", "assistant"]
    assert ok["messages"][1]["content"] == "Clasifica\n\nGenial"
    import json
    bad = {"messages": [{"role": "user", "content": "hola"}]}
    path = write(tmp_path, json.dumps(ok) + "\n" + json.dumps(bad) + "\n" + json.dumps(ok) + "\n")
    report = D.validate_jsonl(path, fmt="messages")
    assert [(p.line, p.kind) for p in report.problems] == [(2, "messages"), (3, "duplicate")]


def test_write_and_read_round_trip_keeps_accents(tmp_path):
    rows = [{"instruction": "Clasifica", "input": "¡Qué maravilla, ñandú!", "output": "POSITIVO"}]
    path = D.write_jsonl(rows, tmp_path / "out.jsonl")
    assert "ñandú" in path.read_text(encoding="utf-8")
    assert D.read_jsonl(path) == rows


def test_split_is_reproducible_and_stratified():
    rows = [{"input": str(i), "output": lab} for i in range(60) for lab in ("A", "B", "C")][:150]
    train, test = D.split_dataset(rows, 0.2, seed=1)
    again_train, again_test = D.split_dataset(rows, 0.2, seed=1)
    assert train == again_train and test == again_test
    assert len(train) + len(test) == len(rows)
    assert D.class_balance(test) == {"A": 10, "B": 10, "C": 10}
    assert D.split_dataset(rows, 0.2, seed=2)[1] != test
    with pytest.raises(ValueError):
        D.split_dataset(rows, 1.5)


def test_the_course_dataset():
    rows = D.sentiment_dataset()
    assert D.class_balance(rows) == {"NEGATIVO": 118, "NEUTRAL": 118, "POSITIVO": 118}
    assert len({r["input"] for r in rows}) == len(rows)  # deduplicated
    assert sum(r["template"] == "manual" for r in rows) == 24


def test_the_natural_test_set_is_whole_groups_balanced_and_reproducible():
    import pytest

    from course_utils.sft_data import (
        DataFormatError,
        natural_reviews,
        natural_test_set,
        sentiment_dataset,
    )

    test = natural_test_set()
    assert len(test) == 60 and D.class_balance(test) == {"NEGATIVO": 20, "NEUTRAL": 20,
                                                        "POSITIVO": 20}
    groups = {r["template"] for r in test}
    everything = natural_reviews()
    assert len(groups) == 5  # every review of those groups, none of the others
    assert test == [r for r in everything if r["template"] in groups]
    assert test == natural_test_set() and test != natural_test_set(seed=1)
    assert not {r["input"] for r in test} & {r["input"] for r in sentiment_dataset()}
    with pytest.raises(DataFormatError, match="grupos"):
        natural_test_set(n_groups=0)


def test_natural_train_and_validation_are_whole_groups_outside_the_test():
    import pytest

    from course_utils.sft_data import (
        DataFormatError,
        natural_reviews,
        natural_test_set,
        natural_train_val,
    )

    train, val = natural_train_val()
    assert (len(train), len(val)) == (408, 36)
    groups = [{r["template"] for r in part} for part in (train, val, natural_test_set())]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert len(train) + len(val) + 60 == len(natural_reviews())  # every review has one place
    assert (train, val) == natural_train_val() and val != natural_train_val(seed=2)[1]
    assert set(D.class_balance(train)) == {"NEGATIVO", "NEUTRAL", "POSITIVO"}
    other_test = {r["template"] for r in natural_test_set(n_groups=6, seed=3)}
    other_train, other_val = natural_train_val(test_groups=6, test_seed=3)
    assert len(other_train) + len(other_val) == len(natural_reviews()) - 72
    assert not {r["template"] for r in other_train + other_val} & other_test
    with pytest.raises(DataFormatError, match="grupos"):
        natural_train_val(n_val_groups=0)
