"""Behaviour claims: asserted on the bundled model, reported (never silently skipped) on others."""

import pytest

import course_utils as cu
from course_utils import gating, standin


@pytest.fixture(scope="module")
def standin_choice(tmp_path_factory):
    path = standin.standin_path("tied", folder=tmp_path_factory.mktemp("standin"))
    return cu.choose_model(str(path))


def test_bundled_model_asserts_the_claim(clean_env, capsys):
    choice = cu.choose_model()
    assert gating.is_bundled(choice) and gating.model_label(choice) == "SmolLM2-135M"
    assert gating.behaviour("el modelo responde", True, choice) is True
    assert "comprobado con el modelo incluido" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="el modelo responde"):
        gating.behaviour("el modelo responde", False, choice)


def test_other_model_reports_visibly_without_failing(standin_choice, capsys):
    assert not gating.is_bundled(standin_choice)
    assert gating.model_label(standin_choice) == standin.VARIANTS["tied"].name
    assert gating.behaviour("el modelo responde", False, standin_choice) is False
    out = capsys.readouterr().out
    assert "NO se cumple" in out and "comprobado con el modelo incluido" in out
    assert standin.VARIANTS["tied"].name in out
