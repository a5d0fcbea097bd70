import pytest

import course_utils as cu
from course_utils.architecture import (
    LLAMA_31_8B,
    LLAMA_31_8B_PUBLISHED_PARAMS,
    ArchSpec,
    gguf_tensor_params,
)


@pytest.fixture(scope="module")
def smol():
    return ArchSpec.from_gguf(cu.bundled_model_path())


def test_bundled_model_is_llama_architecture_with_gqa(smol):
    assert (smol.n_layers, smol.d_model, smol.n_heads, smol.n_kv_heads) == (30, 576, 9, 3)
    assert smol.vocab_size == 49152 and smol.head_dim == 64 and smol.gqa_group == 3
    assert smol.tied_embeddings


def test_parameter_formula_matches_the_real_tensors(smol):
    assert smol.n_params == gguf_tensor_params(cu.bundled_model_path())


def test_formula_reproduces_llama_31_8b_published_size():
    assert LLAMA_31_8B.n_params == pytest.approx(LLAMA_31_8B_PUBLISHED_PARAMS, rel=0.005)
    assert LLAMA_31_8B.head_dim == 128 and LLAMA_31_8B.gqa_group == 4


def test_kv_cache_of_llama_31_8b():
    gib = 1024**3
    assert LLAMA_31_8B.kv_cache_bytes(131072) == 16 * gib  # f16, full 128k context
    assert LLAMA_31_8B.kv_cache_bytes(131072, gqa=False) == 64 * gib
    assert LLAMA_31_8B.kv_cache_bytes(8192) == 1 * gib


def test_from_gguf_rejects_bad_paths(tmp_path):
    with pytest.raises(cu.ModelNotFoundError):
        ArchSpec.from_gguf(tmp_path / "nada.gguf")
