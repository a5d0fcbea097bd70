import pytest

from course_utils import exercises


def test_right_answer(capsys):
    assert exercises.check("kv_cache_8b_8k", 1024**3) is True
    assert "Correcto" in capsys.readouterr().out


@pytest.mark.parametrize("answer, hint", [
    (1.0, "GiB"), (1024**3 / 2, "factor 2"), (4 * 1024**3, "GQA"), (12345, "Pista"),
])
def test_wrong_answers_get_a_specific_hint(answer, hint, capsys):
    assert exercises.check("kv_cache_8b_8k", answer) is False
    assert hint in capsys.readouterr().out


def test_unanswered_is_not_an_error(capsys):
    assert exercises.check("kv_cache_8b_8k", None) is None
    assert "Aún no has respondido" in capsys.readouterr().out


def test_unknown_exercise():
    with pytest.raises(KeyError, match="Disponibles"):
        exercises.check("nope", 1)


def test_llama3_digits(capsys):
    assert exercises.check("llama3_digits", 4) is True
    assert "123 | 456 | 789 | 0" in capsys.readouterr().out
    assert exercises.check("llama3_digits", 10) is False
    assert "SmolLM2" in capsys.readouterr().out


def test_llama3_prompt_exercise(capsys):
    from course_utils.prompts import llama3_prompt

    right = llama3_prompt(exercises.CH03_MESSAGES)
    assert exercises.check("llama3_prompt", right) is True
    assert exercises.check("llama3_prompt", right.rstrip("\n")) is False
    assert "dos saltos" in capsys.readouterr().out
    assert exercises.check("llama3_prompt", right[len("<|begin_of_text|>"):]) is False
    assert "Falta" in capsys.readouterr().out
    assert exercises.check("llama3_prompt", right.replace("Oaxaca", "Puebla")) is False
    assert "Difiere" in capsys.readouterr().out


def test_top_p_count(capsys):
    assert exercises.check("top_p_count", 3) is True
    assert exercises.check("top_p_count", 2) is False
    assert "corto" in capsys.readouterr().out


def test_mem_70b_exercise(capsys):
    from course_utils import memory as mem

    est = mem.estimate_memory(mem.LLAMA_31_70B, "Q4_K_M", n_ctx=32768)
    assert exercises.check("mem_70b_q4_32k", est.total / mem.GB) is True
    assert exercises.check("mem_70b_q4_32k", est.weights / mem.GB) is False
    assert "KV cache" in capsys.readouterr().out


def test_lora_exercise(capsys):
    assert exercises.check("lora_qv_r8", 30 * 8 * (1152 + 768)) is True
    assert exercises.check("lora_qv_r8", 8 * (1152 + 768)) is False
    assert "30 capas" in capsys.readouterr().out
