"""``scripts/natural_reviews_experiment.py`` (chapter 06's side experiment): leak-free data and a
tiny run end to end on the Llama 3 stand-in."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from course_utils import standin

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "natural_reviews_experiment.py"


@pytest.fixture(scope="module")
def experiment():
    spec = importlib.util.spec_from_file_location("natural_reviews_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_test_review_group_or_template_is_trained_on(experiment):
    tests = experiment.test_sets()
    test_inputs = {r["input"] for rows in tests.values() for r in rows}
    test_groups = {r["template"] for rows in tests.values() for r in rows}
    for kind in ("templates", "natural", "mix"):
        train, val = experiment.datasets(kind)
        assert train and val
        assert not {r["input"] for r in train + val} & test_inputs, kind
        assert not {r["template"] for r in train + val} & test_groups, kind
        assert not {r["input"] for r in train} & {r["input"] for r in val}, kind
    natural, _ = experiment.datasets("natural")
    assert len(natural) == 408 and len(tests["natural"]) == 60 and len(tests["manual"]) == 24


def test_a_tiny_run_prints_every_test_set(experiment, capsys):
    reports = experiment.main(["--data", "mix", "--limit", "6", "--model",
                               str(standin.standin_path("tied"))])
    assert set(reports) == {"natural", "templates", "manual"}
    assert all(0 <= r["accuracy"] <= 1 and r["sin etiqueta"] == 0 for r in reports.values())
    out = capsys.readouterr().out
    assert "entrenamiento:" in out and out.count("prueba ") == 3
