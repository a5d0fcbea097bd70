import pytest

import course_utils as cu
from course_utils import tokens as T


@pytest.fixture(scope="module")
def llama3():
    return T.llama3_view()


@pytest.fixture(scope="module")
def smol():
    return T.llama_cpp_view(cu.load_llm(n_ctx=512), "SmolLM2")


SAMPLES = ["¡Hola mundo!", "Hola, ¿cómo estás?", "El año 2024 tiene 366 días",
           "Me gusta la pizza 🍕 y el café ☕", 'def saludar(nombre):\n    return f"Hola, {nombre}!"',
           "", "   espacios   ", "日本語のテキスト"]


@pytest.mark.parametrize("text", SAMPLES)
def test_pieces_are_the_exact_bytes_and_decode_round_trips(text, llama3, smol):
    for view in (llama3, smol):
        pieces = view.tokens(text)
        assert b"".join(t.raw for t in pieces) == text.encode("utf-8")
        assert view.decode(view.ids(text)) == text


def test_vocab_sizes(llama3, smol):
    assert llama3.vocab_size == 128257  # 128 256 + <|image|> (Llama 3.2 file)
    assert smol.vocab_size == 49152


def test_llama3_special_tokens(llama3):
    specials = llama3.special_tokens
    assert specials["<|begin_of_text|>"] == 128000
    assert specials["<|eot_id|>"] == 128009
    assert llama3.piece(128009) == b"<|eot_id|>"


def test_llama3_groups_digits_in_threes(llama3):
    assert [t.text for t in llama3.tokens("1234567890")] == ["123", "456", "789", "0"]


def test_readable_marks_spaces_and_partial_bytes():
    assert T.readable(b" a\n") == "␣a↵"
    assert T.readable(" 🍕".encode()[:3]) == "␣⟨F0 9F⟩"
    assert T.Token(1, b"\xf0").is_partial and not T.Token(1, b"a").is_partial


def test_count_words():
    assert T.count_words("¿Cómo estás? Bien, gracias.") == 4
    assert T.count_words("") == 0


def test_token_counts_and_ratios(llama3):
    (c,) = T.token_counts("hello world", [llama3])
    assert (c.tokens, c.words, c.chars) == (2, 2, 11)
    assert c.words_per_token == 1.0 and c.tokens_per_word == 1.0


def test_fits_in_context(llama3):
    n = llama3.count("hola, ¿qué tal?")
    assert T.fits_in_context("hola, ¿qué tal?", llama3, n_ctx=n + 9, max_tokens=9)
    assert not T.fits_in_context("hola, ¿qué tal?", llama3, n_ctx=n + 9, max_tokens=10)
    with pytest.raises(ValueError):
        T.fits_in_context("hola", llama3, n_ctx=0, max_tokens=1)


def test_unknown_id_is_a_clear_error(llama3):
    with pytest.raises(KeyError, match="no existe"):
        llama3.piece(10**7)


def test_parallel_texts_are_parallel():
    paragraphs = T.parallel_texts()
    assert len(paragraphs) >= 5
    for p in paragraphs:
        ratio = T.count_words(p["es"]) / T.count_words(p["en"])
        assert 0.8 < ratio < 1.25, p["topic"]


def test_html_view_escapes_and_marks_partial_tokens(llama3):
    html = T.compare_html("<b>🍕</b>", [llama3])
    assert "<b>🍕" not in html and "&lt;b&gt;" in html
    assert "dashed" in html and 'title="id ' in html


@pytest.fixture(scope="module")
def standin_view(tmp_path_factory):
    from llama_cpp import Llama

    from course_utils.course_llama import quiet_stderr

    path = cu.standin.standin_path("tied", folder=tmp_path_factory.mktemp("standin"))
    with quiet_stderr():
        vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    return T.llama_cpp_view(vocab, "stand-in")


def test_a_llama3_gguf_is_recognised_and_tokenizes_like_the_real_tokenizer(standin_view, llama3, smol):
    assert T.is_llama3_tokenizer(standin_view, llama3)
    assert not T.is_llama3_tokenizer(smol, llama3)
    assert T.tokenization_differences(standin_view, llama3, SAMPLES) == []
    assert T.tokenization_differences(smol, llama3, SAMPLES[:1]) == SAMPLES[:1]


def test_pieces_longer_than_32_bytes_are_not_lost(standin_view, llama3):
    # llama-cpp-python's detokenize drops pieces over 32 bytes; the view must not
    dashes = "-" * 64
    assert llama3.ids(dashes) == [3597]
    assert standin_view.piece(3597) == dashes.encode() == llama3.piece(3597)
    assert standin_view.decode(standin_view.ids(dashes + " fin")) == dashes + " fin"
    with pytest.raises(KeyError, match="no existe"):
        standin_view.piece(T.LLAMA3_TEXT_VOCAB)


def test_smollm2_view_reuses_the_bundled_model_or_loads_only_its_vocabulary(smol):
    reused = T.smollm2_view(smol.llm)
    assert reused.llm is smol.llm and reused.name == T.SMOLLM2_NAME
    alone = T.smollm2_view()
    assert alone.llm is not smol.llm and alone.vocab_size == smol.vocab_size
    assert alone.ids("¡Hola mundo!") == smol.ids("¡Hola mundo!")
