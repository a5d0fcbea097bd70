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


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    folder = tmp_path_factory.mktemp("standin")
    return {v: cu.standin.standin_path(v, folder=folder) for v in ("tied", "untied")}


def test_llama3_rope_scaling_is_read_from_rope_freqs(standins):
    expected = {"tied": (32.0, True), "untied": (8.0, False)}
    for variant, path in standins.items():
        spec = ArchSpec.from_gguf(path)
        factor, tied = expected[variant]
        assert spec.rope_scaling == "llama3" and spec.rope_scaling_factor == factor
        assert spec.tied_embeddings is tied
        assert spec.rope_freqs_values == spec.head_dim // 2 == 16
        # the formula counts learned parameters; the file also stores the RoPE factors
        assert spec.n_params + spec.rope_freqs_values == spec.n_stored == gguf_tensor_params(path)


def test_bundled_model_has_no_rope_scaling(smol):
    assert smol.rope_scaling is None and smol.rope_scaling_factor is None
    assert smol.rope_freqs_values == 0 and smol.n_stored == smol.n_params
    assert LLAMA_31_8B.rope_scaling == "llama3" and LLAMA_31_8B.rope_freqs_values == 64


def test_gguf_layout_accounts_for_every_byte(standins):
    for path in (cu.bundled_model_path(), standins["tied"]):
        layout = cu.architecture.gguf_layout(path)
        assert layout.file_bytes == path.stat().st_size
        assert layout.header_bytes + layout.tensor_bytes + layout.padding_bytes == layout.file_bytes
        assert 0 <= layout.padding_bytes < 32 * 400  # at most one alignment per tensor
        assert layout.tokenizer_bytes <= layout.metadata_bytes <= layout.header_bytes
        assert layout.tokenizer_bytes > 0.9 * layout.metadata_bytes  # the vocabulary dominates
    assert cu.architecture.gguf_layout(standins["tied"]).tokenizer_bytes > 7e6  # 128 256 tokens


def test_expected_bits_per_weight_from_block_sizes():
    bits = cu.architecture.expected_bits_per_weight
    assert (bits("Q4_1"), bits("Q8_0"), bits("F32"), bits("F16")) == (5.0, 8.5, 32.0, 16.0)
    assert (bits("Q4_K"), bits("Q6_K")) == (4.5, 6.5625)
    with pytest.raises(ValueError, match="desconocido"):
        bits("Q3_X")


def test_fast_index_reads_what_gguf_reader_reads(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_block_count(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_token_list(["<s>", "hola", "␣mundo", "ñ"])
    w.add_token_scores([0.0, -1.5, -2.0, -3.0])
    w.add_bool("tiny.flag", True)
    w.add_tensor("token_embd.weight", np.arange(4 * 8, dtype=np.float16).reshape(4, 8))
    w.add_tensor("rope_freqs.weight", np.array([1.0, 2.0, 8.0], dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((2, 34), dtype=np.uint8), raw_shape=(2, 34),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)  # 2 blocks of 32 weights, 34 bytes each
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    index = cu.architecture.read_gguf_index(path)
    reader = gguf.GGUFReader(str(path))
    assert index.data_offset == reader.data_offset
    for mine, ref in zip(index.tensors, reader.tensors, strict=True):
        assert (mine.name, mine.shape, mine.type_name) == (
            ref.name, tuple(int(d) for d in ref.shape), ref.tensor_type.name)
        assert (mine.n_elements, mine.n_bytes, mine.offset) == (
            int(ref.n_elements), int(ref.n_bytes), int(ref.data_offset))
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = index.fields[key]
        assert list(np.atleast_1d(value)) == pytest.approx(list(np.atleast_1d(field.contents())))
        assert index.field_bytes[key] == sum(int(p.nbytes) for p in field.parts)
    assert index.fields["tokenizer.ggml.tokens"] == ["<s>", "hola", "␣mundo", "ñ"]
    assert index.read_tensor("rope_freqs.weight").tolist() == [1.0, 2.0, 8.0]
    assert index.tensor("blk.0.attn_q.weight").n_bytes == 68
    # bytes measured between offsets: the data plus padding up to the 32-byte alignment
    spans = index.tensor_spans()
    assert spans["token_embd.weight"] == 64 and spans["rope_freqs.weight"] == 32
    assert 68 <= spans["blk.0.attn_q.weight"] < 68 + 32
    with pytest.raises(ValueError, match="F32 o F16"):
        index.read_tensor("blk.0.attn_q.weight")
    with pytest.raises(KeyError, match="nada"):
        index.tensor("nada")
