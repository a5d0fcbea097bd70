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
    assert "4" not in capsys.readouterr().out  # the verdict does not give the answer away
    assert exercises.check("llama3_digits", 10) is False
    assert "SmolLM2" in capsys.readouterr().out


def test_spanish_extra_tokens(capsys):
    from course_utils.tokens import count_words, llama3_view, parallel_texts

    view = llama3_view()
    texts = next(p for p in parallel_texts() if p["topic"] == exercises.CH02_TOPIC)
    es, en = view.count(texts["es"]), view.count(texts["en"])
    assert es > en  # the same content takes more tokens in Spanish
    right = 100 * (es / en - 1)
    assert exercises.check("spanish_extra_tokens", right) is True
    out = capsys.readouterr().out
    assert f"{right:.0f}" not in out and f"{right:.1f}" not in out
    assert exercises.check("spanish_extra_tokens", right + 0.4) is True
    assert exercises.check("spanish_extra_tokens", right + 2) is False
    capsys.readouterr()
    assert exercises.check("spanish_extra_tokens", right / 100) is False
    assert "fracción" in capsys.readouterr().out
    wpt_es, wpt_en = count_words(texts["es"]) / es, count_words(texts["en"]) / en
    assert exercises.check("spanish_extra_tokens", 100 * (wpt_en / wpt_es - 1)) is False
    assert "palabras por token" in capsys.readouterr().out
    assert exercises.check("spanish_extra_tokens", 100 * (1 - en / es)) is False
    assert "sobre la" in capsys.readouterr().out


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


def test_lora_adapter_exercise(capsys):
    # q, o: 4096->4096; k, v: 4096->1024; gate, up: 4096->14336; down: 14336->4096
    per_layer = 16 * (2 * 8192 + 2 * 5120 + 3 * 18432)
    right = 32 * per_layer * 4 / 1e6
    assert exercises.check("lora_adapter_8b_mb", right) is True
    assert exercises.check("lora_adapter_8b_mb", right / 4) is False
    assert "4 bytes" in capsys.readouterr().out
    assert exercises.check("lora_adapter_8b_mb", right / 2) is False


def test_ceiling_exercise(capsys):
    from course_utils.architecture import LLAMA_31_8B

    per_token = exercises.CH07_FILE_BYTES - exercises.CH07_EMBD_BYTES + 4096 * 144 // 256
    assert exercises.CH07_EMBD_BYTES == 128_256 * 4096 * 4.5 / 8  # Q4_K: 4.5 bits per weight
    assert LLAMA_31_8B.tied_embeddings is False
    assert exercises.check("ceiling_8b_q4", 50e9 / per_token) is True
    capsys.readouterr()
    assert exercises.check("ceiling_8b_q4", 50 / 4.92) is False
    assert "archivo entero" in capsys.readouterr().out
    assert exercises.check("ceiling_8b_q4", per_token / 50e9) is False
    assert "segundos por token" in capsys.readouterr().out


def test_prefix_tokens_exercise(capsys):
    assert exercises.check("prefix_tokens", 300 + 5 * 40) is True
    assert exercises.check("prefix_tokens", 5 * 340) is False
    assert "sin reutilizar" in capsys.readouterr().out
    assert exercises.check("prefix_tokens", 200) is False
    assert "Te falta el prefijo" in capsys.readouterr().out


def test_macro_f1_exercise(capsys):
    assert exercises.check("macro_f1_constant", 0.5 / 3) is True
    assert exercises.check("macro_f1_constant", 1 / 3) is False
    assert "exactitud" in capsys.readouterr().out
    assert exercises.check("macro_f1_constant", 0.5) is False
    assert "F1 de POSITIVO" in capsys.readouterr().out


def test_prune_2_4_exercise(capsys):
    assert exercises.check("prune_2_4", [0.9, -0.8, 0, 0, 0, 0, 0.2, -0.15]) is True
    assert exercises.check("prune_2_4", (0.9, -0.8, 0.7, 0.6, 0, 0, 0, 0)) is False
    assert "no estructurada" in capsys.readouterr().out
    assert exercises.check("prune_2_4", [0.9, -0.8, 0, 0, 0.05, 0, 0, -0.15]) is False
    assert "valor absoluto" in capsys.readouterr().out
    assert exercises.check("prune_2_4", [1, 2, 3]) is False


def test_correct_verdicts_do_not_print_the_answer(capsys):
    """A folded solution's output must not give the number away (chapters 07 and 08)."""
    for name, answer, shown in [("prefix_tokens", 500, "500"), ("macro_f1_constant", 1 / 6, "0.1"),
                                ("ceiling_8b_q4", 10.81, "10.")]:
        assert exercises.check(name, answer) is True
        assert shown not in capsys.readouterr().out


def test_params_llama32_1b_exercise(capsys):
    spec = exercises.CH01_LLAMA_32_1B
    right = spec.n_params
    assert right == 1_235_814_400  # Meta publishes 1.24 B (1.23 B on the model card's table)
    assert exercises.check("params_llama32_1b", right) is True
    out = capsys.readouterr().out
    assert "Correcto" in out and f"{right:,}" not in out  # the solution's output gives nothing away
    for wrong, hint in [
        (right + 128_256 * 2048, "comparte"),  # a separate output head
        (right + 16 * 2 * 2048 * (2048 - 512), "GQA"),  # K and V as d × d
        (right - 16 * 2048 * 8192, "tres matrices"),
        (right - (16 * 2 * 2048 + 2048), "RMSNorm"),
        (12345, "Pista"),
    ]:
        assert exercises.check("params_llama32_1b", wrong) is False
        assert hint in capsys.readouterr().out


def test_q3_k_bits_exercise(capsys):
    assert exercises.check("q3_k_bits", (256 * 3 + 16 * 6 + 16) / 256) is True
    out = capsys.readouterr().out
    assert "Correcto" in out and "3.4375" not in out and "3,4375" not in out
    for wrong, hint in [(3, "escalas"), (3.0625, "16 escalas"), (3.375, "super-bloque"),
                        (110, "bytes"), (880, "bits por super-bloque"), (4.5, "Pista")]:
        assert exercises.check("q3_k_bits", wrong) is False
        assert hint in capsys.readouterr().out


def test_chapter_01_and_05_successes_do_not_print_the_answer(capsys):
    from course_utils import memory as mem
    from course_utils.architecture import LLAMA_31_8B

    assert exercises.check("kv_cache_8b_8k", LLAMA_31_8B.kv_cache_bytes(8192)) is True
    est = mem.estimate_memory(mem.LLAMA_31_70B, "Q4_K_M", n_ctx=32768)
    assert exercises.check("mem_70b_q4_32k", est.total / mem.GB) is True
    out = capsys.readouterr().out
    assert "8,589,934,592" not in out and "GiB" not in out
    assert f"{est.total / mem.GB:.1f}" not in out and "cabe " not in out


def test_top_p_count_solution_message_does_not_give_the_number_away(capsys):
    assert exercises.check("top_p_count", 3) is True
    assert "3" not in capsys.readouterr().out


def test_llama3_clean_user_text(capsys):
    from course_utils.tokens import llama3_view

    specials = list(llama3_view().special_tokens)

    def once(text):  # one pass: misses the nested marker
        for marker in specials:
            text = text.replace(marker, "")
        return text

    def until_clean(text):
        while (cleaned := once(text)) != text:
            text = cleaned
        return text

    assert exercises.check("llama3_clean_user_text", until_clean) is True
    assert "intacto" in capsys.readouterr().out
    assert exercises.check("llama3_clean_user_text", once) is False
    assert "repite" in capsys.readouterr().out
    assert exercises.check("llama3_clean_user_text", lambda t: "") is False
    assert "exactamente igual" in capsys.readouterr().out
    assert exercises.check("llama3_clean_user_text", until_clean("Hola")) is False
    assert "función misma" in capsys.readouterr().out


@pytest.mark.parametrize("answer, hint", [
    (0.1225 / 0.2288, "seis tokens"), (0.35 / 0.75, "falta la temperatura"),
    (0.35**0.5 / (0.35**0.5 + 0.25**0.5 + 0.15**0.5), "1/T"), (0.35, "original"), (0.9, "Pista"),
])
def test_top_k_temperature(answer, hint, capsys):
    assert exercises.check("top_k_temperature", 0.1225 / 0.2075) is True
    assert "0,59" not in capsys.readouterr().out  # the verdict does not print the number
    assert exercises.check("top_k_temperature", answer) is False
    assert hint in capsys.readouterr().out
