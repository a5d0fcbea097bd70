"""The Llama 3 stand-in: real Llama 3 structure (tokenizer, template, GQA, RoPE scaling, tied and
untied heads) in a tiny GGUF built from code, and every chapter executed with it as
``COURSE_MODEL``."""

from __future__ import annotations

import numpy as np
import pytest

from course_utils import standin
from course_utils.architecture import ArchSpec

SAMPLE = [
    "¡Hola! ¿Cómo estás? Me encantó el café ☕ de Bogotá, aunque el pingüino no opinó.",
    "The quick brown fox jumps over the lazy dog; 1234567 tokens, 3.14159 and 2026-11-23.",
    "Emojis: 👍🏽 👨‍👩‍👧‍👦 🇪🇸 🍕😂",
    "def f(x):\n    return {'a': [x ** 2 for _ in range(10)]}  # código\n\t\tfin",
    "  espacios   múltiples\n\n\nnuevas líneas y ñandú, acción, pingüino, über, naïve",
]


@pytest.fixture(scope="module")
def standin_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("standin")
    return {v: standin.standin_path(v, folder=folder) for v in standin.VARIANTS}


@pytest.fixture(scope="module")
def tied_llm(standin_files):
    import course_utils as cu

    llm = cu.load_llm(str(standin_files["tied"]), n_ctx=512)
    yield llm
    llm.close()


def test_build_is_deterministic_and_fast(tmp_path, standin_files):
    import time

    start = time.perf_counter()
    again = standin.write_standin(tmp_path / "again.gguf", standin.VARIANTS["tied"])
    seconds = time.perf_counter() - start
    assert again.read_bytes() == standin_files["tied"].read_bytes()
    assert seconds < 30, f"building the stand-in took {seconds:.1f} s"


def test_structure_is_llama3(standin_files):
    from gguf import GGUFReader

    for variant, path in standin_files.items():
        spec = ArchSpec.from_gguf(path)
        assert spec.vocab_size == 128_256
        assert spec.n_kv_heads < spec.n_heads  # GQA
        assert spec.rope_theta == 500_000
        assert spec.context_length == 131_072
        assert spec.tied_embeddings == (variant == "tied")
        reader = GGUFReader(str(path))
        names = {t.name for t in reader.tensors}
        assert "rope_freqs.weight" in names
        assert reader.get_field("tokenizer.ggml.pre").contents() == "llama-bpe"
        factors = next(t for t in reader.tensors if t.name == "rope_freqs.weight").data
        assert factors.shape == (spec.head_dim // 2,)
        assert factors.min() == 1.0 and factors.max() == standin.VARIANTS[variant].rope_factor


def test_rope_factors_match_meta_reference():
    # Llama 3.1 8B: head_dim 128, theta 500 000, factor 8: the first frequencies are kept, the
    # last ones divided by 8, and the band between is smooth and increasing.
    f = standin.llama3_rope_factors(128, 500_000.0, 8.0)
    assert f.shape == (64,)
    assert f[0] == 1.0 and f[-1] == 8.0
    assert np.all(np.diff(f) >= 0)
    assert ((f > 1) & (f < 8)).any()


def test_llama_cpp_detects_the_llama3_template(tied_llm):
    assert tied_llm.chat_format == "llama-3"
    assert tied_llm.token_bos() == standin.BOS_ID and tied_llm.token_eos() == standin.EOT_ID
    assert tied_llm.n_vocab() == 128_256
    out = tied_llm.create_chat_completion(messages=[{"role": "user", "content": "Hola"}],
                                          max_tokens=4, temperature=0)
    assert out["usage"]["prompt_tokens"] == len(tied_llm.tokenize(
        b"<|start_header_id|>user<|end_header_id|>\n\nHola<|eot_id|>"
        b"<|start_header_id|>assistant<|end_header_id|>\n\n", add_bos=True, special=True))


@pytest.mark.parametrize("text", SAMPLE)
def test_tokenization_equals_the_tokenizers_library(tied_llm, text):
    import course_utils as cu

    reference = cu.load_llama3_tokenizer().encode(text, add_special_tokens=False).ids
    ours = tied_llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    assert ours == reference
    assert tied_llm.detokenize(ours).decode("utf-8") == text


def test_special_tokens_are_control_tokens(tied_llm):
    ids = tied_llm.tokenize(b"<|begin_of_text|><|start_header_id|>user<|end_header_id|><|eot_id|>",
                            add_bos=False, special=True)
    assert ids == [128000, 128006, 882, 128007, 128009]
