import os

import numpy as np
import pytest

import course_utils as cu
from course_utils import memory as MEM
from course_utils import quantization as Q
from course_utils.architecture import LLAMA_31_8B


@pytest.fixture(scope="module")
def f16(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "smol-f16.gguf"
    return Q.quantize(cu.bundled_model_path(), out, "F16", allow_requantize=True)


def test_f16_from_the_bundled_model(f16):
    assert f16.path.is_file() and not Q.is_quantized(f16.path)
    assert f16.bits_per_weight == pytest.approx(16, abs=0.1)
    assert Q.is_quantized(cu.bundled_model_path())


def test_quantize_to_q8_0_and_load(f16, tmp_path):
    q8 = Q.quantize(f16.path, tmp_path / "q8.gguf", "q8_0")
    assert q8.qtype == "Q8_0" and q8.size_bytes < f16.size_bytes / 1.8
    assert Q.tensor_types(q8.path).get("Q8_0", 0) > 0.99
    llm = cu.load_llm(str(q8.path), n_ctx=256)
    assert llm("Hello", max_tokens=2)["usage"]["completion_tokens"] >= 1


def test_missing_file(tmp_path):
    with pytest.raises(cu.ModelNotFoundError):
        Q.quantize(tmp_path / "nada.gguf", tmp_path / "out.gguf", "Q8_0")
    assert not (tmp_path / "out.gguf").exists()


def test_unknown_type(f16, tmp_path):
    with pytest.raises(Q.QuantizationError, match="Tipos válidos"):
        Q.quantize(f16.path, tmp_path / "out.gguf", "Q7_X")
    assert list(tmp_path.iterdir()) == []


def test_requantize_refused_without_saying_so(tmp_path):
    with pytest.raises(Q.QuantizationError, match="ya está cuantizado"):
        Q.quantize(cu.bundled_model_path(), tmp_path / "out.gguf", "Q4_K_M")
    assert list(tmp_path.iterdir()) == []  # no partial file


def test_failed_run_leaves_no_partial_file(tmp_path):
    good = cu.bundled_model_path().read_bytes()
    truncated = tmp_path / "cortado.gguf"
    truncated.write_bytes(good[:1_000_000])  # a valid header, then nothing
    with pytest.raises(Q.QuantizationError, match="no pudo cuantizar"):
        Q.quantize(truncated, tmp_path / "out.gguf", "Q8_0", allow_requantize=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cortado.gguf"]


def test_same_input_and_output(f16):
    with pytest.raises(Q.QuantizationError, match="mismo"):
        Q.quantize(f16.path, f16.path, "Q8_0")


def test_perplexity_and_kl(f16):
    llm = cu.load_llm(str(f16.path), n_ctx=256, logits_all=True)
    tokens, lp = Q.token_logprobs(llm, "The cat sat on the mat. The cat sat on the mat.")
    assert lp.shape == (len(tokens) - 1, llm.n_vocab())
    assert np.allclose(np.exp(lp).sum(-1), 1, atol=1e-3)
    assert 1 < Q.perplexity(tokens, lp) < 1000
    same = Q.compare_logprobs(lp, lp)
    assert same["kl"] == pytest.approx(0, abs=1e-6) and same["top1"] == 1.0


# --------------------------------------------------------------------------- calculator


def test_effective_bpw_reproduces_the_8b_files():
    for quant, size in MEM.PUBLISHED_SIZES_8B.items():
        est = MEM.estimate_memory(LLAMA_31_8B, quant).weights / MEM.GB
        assert est == pytest.approx(size, rel=1e-9)


def test_calculator_predicts_the_70b_files_it_has_not_seen():
    assert MEM.LLAMA_31_70B.n_params == pytest.approx(70.55e9, rel=0.002)
    for quant, size in MEM.PUBLISHED_SIZES_70B.items():
        est = MEM.estimate_memory(MEM.LLAMA_31_70B, quant).weights / MEM.GB
        assert est == pytest.approx(size, rel=0.08), quant


def test_seed_exercise_8b_q4_vs_q8():
    q4 = MEM.estimate_memory(LLAMA_31_8B, "Q4_K_M", n_ctx=8192)
    q8 = MEM.estimate_memory(LLAMA_31_8B, "Q8_0", n_ctx=8192)
    assert q4.kv_cache == 1024**3 and q4.total < q8.total
    assert 6 < q4.total / MEM.GB < 7 and 10 < q8.total / MEM.GB < 11


def test_largest_quant_that_fits():
    assert MEM.largest_quant_that_fits(LLAMA_31_8B, 20 * MEM.GIB) == "Q8_0"
    assert MEM.largest_quant_that_fits(LLAMA_31_8B, 20 * MEM.GIB, include_f16=True) == "F16"
    assert MEM.largest_quant_that_fits(LLAMA_31_8B, 6.5 * MEM.GIB) == "Q4_K_M"
    assert MEM.largest_quant_that_fits(LLAMA_31_8B, 2 * MEM.GIB) is None
    with pytest.raises(ValueError, match="Opciones"):
        MEM.estimate_memory(LLAMA_31_8B, "Q9")


def test_numpy_quantizers():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 64)).astype(np.float32)
    e8 = np.abs(Q.absmax_quantize(w, 8) - w).mean()
    e4 = np.abs(Q.absmax_quantize(w, 4) - w).mean()
    e8_tensor = np.abs(Q.absmax_quantize(w, 8, block_size=None) - w).mean()
    assert e8 < e4 and e8 <= e8_tensor
    assert np.abs(Q.minmax_quantize(w, 4) - w).mean() < e4  # 16 levels vs 15 used + a min
    assert Q.absmax_quantize(np.zeros(32), 4).tolist() == [0.0] * 32
    with pytest.raises(ValueError, match="múltiplo"):
        Q.absmax_quantize(np.ones(33), 8, block_size=32)


def test_stored_bits_per_weight_are_the_block_sizes(f16):
    from course_utils.architecture import expected_bits_per_weight

    for path in (cu.bundled_model_path(), f16.path):
        stored = Q.stored_bits_per_weight(path)
        for kind, bits in stored.items():
            assert 0 <= bits - expected_bits_per_weight(kind) < 0.01, (path.name, kind)
    assert set(Q.stored_bits_per_weight(cu.bundled_model_path())) == {"Q4_1", "Q8_0", "F32"}


def test_read_tensor(f16):
    w = Q.read_tensor(f16.path, "blk.0.ffn_gate.weight")
    assert w.shape == (1536, 576) and w.dtype == np.float32
    with pytest.raises(KeyError):
        Q.read_tensor(f16.path, "nope")


def test_quantize_prints_nothing(tmp_path, capfd):
    import subprocess
    import sys

    code = ("import course_utils as cu, sys; from course_utils import quantization as Q; "
            f"Q.quantize(cu.bundled_model_path(), {str(tmp_path / 'x.gguf')!r}, 'Q4_K_M', "
            "allow_requantize=True)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stderr == "" and out.stdout == "", out.stderr[-500:]


def test_quantize_prints_nothing_to_python_stderr(f16, tmp_path, capsys):
    """Like in Jupyter, where sys.stderr is not file descriptor 2."""
    Q.quantize(f16.path, tmp_path / "q4.gguf", "Q4_K_M")
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


# --------------------------------------------------------------------------- any Llama 3.x file


@pytest.fixture(scope="module")
def standin_f16(tmp_path_factory):
    from course_utils import standin

    return standin.standin_path("tied", folder=tmp_path_factory.mktemp("standin"))


def test_file_and_tensor_types():
    bundled = cu.bundled_model_path()
    assert Q.file_type(bundled) == "Q4_1"
    assert Q.tensor_type(bundled, "blk.0.ffn_gate.weight") == "Q4_1"
    assert Q.tensor_type(bundled, "token_embd.weight") == "Q8_0"
    with pytest.raises(KeyError, match="nope"):
        Q.tensor_type(bundled, "nope")


def test_unquantized_reference_expands_a_quantized_file(tmp_path):
    ref = Q.unquantized_reference(cu.bundled_model_path(), tmp_path, "smollm2-135m")
    assert ref.dequantized and ref.qtype == "F16" and ref.source_type == "Q4_1"
    assert ref.path == tmp_path / "smollm2-135m-f16.gguf" and not Q.is_quantized(ref.path)
    assert "Q4_1" in ref.describe() and "redondeo" in ref.describe()


def test_unquantized_reference_keeps_an_f16_file(standin_f16, tmp_path):
    ref = Q.unquantized_reference(standin_f16, tmp_path)
    assert not ref.dequantized and ref.path == standin_f16 and ref.qtype == "F16"
    assert ref.source_type == "F16" and list(tmp_path.iterdir()) == []  # nothing written
    assert "originales" in ref.describe()


def test_k_quant_share_predicts_llama_cpp_fallbacks(f16, tmp_path):
    """K-quants need rows that are multiples of 256: SmolLM2 (576) falls back, except ffn_down."""
    q4 = Q.quantize(f16.path, tmp_path / "q4km.gguf", "Q4_K_M").path
    share = Q.k_quant_share(q4)
    assert share["previsto"] == pytest.approx(30 * 1536 * 576 / 134_479_872, rel=1e-6)
    assert share["en el archivo"] == pytest.approx(share["previsto"], abs=1e-9)
    assert Q.k_quant_share(f16.path)["en el archivo"] == 0


def test_model_dims_and_read_tensor_on_the_llama3_standin(standin_f16):
    assert Q.model_dims(cu.bundled_model_path()) == {"d_model": 576, "d_ff": 1536, "kv": 192}
    assert Q.model_dims(standin_f16) == {"d_model": 128, "d_ff": 256, "kv": 64}
    w = Q.read_tensor(standin_f16, "blk.0.ffn_gate.weight")
    assert w.shape == (256, 128) and w.dtype == np.float32 and 0 < w.std() < 0.05


def test_file_stem():
    assert Q.file_stem("Llama-3.2-standin (tied)") == "llama-3.2-standin-tied"
    assert Q.file_stem("SmolLM2-135M") == "smollm2-135m"
    assert Q.file_stem("¿?") == "modelo"


# --------------------------------------------------------------------------- K-quants, for real


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return Q.write_mini_llama(tmp_path_factory.mktemp("mini") / "mini-f16.gguf")


def test_mini_llama_has_llama_31_8b_proportions(mini):
    sizes = {t.name: t.n_elements for t in Q._tensors(mini)}
    n = sum(sizes.values())
    assert 6.9e6 < n < 7.0e6  # "7 millones de pesos"
    parts = LLAMA_31_8B.param_breakdown()
    share_8b = (parts["embeddings"] + parts["output head"]) / LLAMA_31_8B.n_params
    share = (sizes["token_embd.weight"] + sizes["output.weight"]) / n
    assert share == pytest.approx(share_8b, abs=0.005)  # ~13 %
    spec = Q.MINI_LLAMA
    assert spec.n_heads // spec.n_kv_heads == LLAMA_31_8B.gqa_group == 4


def test_mini_llama_rows_all_take_k_quants(mini, tmp_path):
    assert not Q.is_quantized(mini) and Q.file_type(mini) == "F16"
    assert Q.model_dims(mini) == {"d_model": 256, "d_ff": 768, "kv": 64}
    q4 = Q.quantize(mini, tmp_path / "q4km.gguf", "Q4_K_M").path
    assert Q.k_quant_share(q4) == {"previsto": 1.0, "en el archivo": 1.0}
    # the recipe keeps part of the matrices in Q6_K, as in a published Llama 3.1 8B Q4_K_M
    assert set(Q.tensor_types(q4)) == {"Q4_K", "Q6_K", "F32"}
    in_q6k = {t.name for t in Q._tensors(q4) if t.type_name == "Q6_K"}
    half = {f"blk.{i}.{m}.weight" for i in (0, 3, 6, 7) for m in ("attn_v", "ffn_down")}
    assert in_q6k == half | {"output.weight"}  # attn_v/ffn_down of half the layers, the head
    assert Q.bits_per_weight(q4) == pytest.approx(MEM.EFFECTIVE_BPW["Q4_K_M"], abs=0.05)


def test_weight_error_measures_the_rounding(mini, tmp_path):
    assert Q.weight_error(mini, mini) == 0.0
    q8 = Q.quantize(mini, tmp_path / "q8.gguf", "Q8_0").path
    q2 = Q.quantize(mini, tmp_path / "q2.gguf", "Q2_K").path
    e8, e2 = Q.weight_error(mini, q8), Q.weight_error(mini, q2)
    assert 0 < e8 < 0.01 < 0.1 < e2 < 0.5
    # the same measure by hand on one matrix: within the whole file's range
    w, w8 = (Q.read_tensor(p, "blk.0.ffn_down.weight") for p in (mini, q8))
    one = float(np.sqrt(((w8 - w) ** 2).sum() / (w**2).sum()))
    assert one == pytest.approx(e8, rel=0.2)


def test_head_apart_explains_the_q2_k_error_on_70b():
    from course_utils.architecture import expected_bits_per_weight

    q6 = expected_bits_per_weight("Q6_K")
    published = MEM.PUBLISHED_SIZES_70B["Q2_K"] * MEM.GB
    naive = MEM.estimate_memory(MEM.LLAMA_31_70B, "Q2_K").weights
    apart = MEM.weights_with_head_apart(MEM.LLAMA_31_70B, "Q2_K", q6)
    assert naive / published - 1 > 0.05 and abs(apart / published - 1) < 0.01
    # on 8B itself the split changes nothing: same file, same bits
    assert abs(MEM.weights_with_head_apart(LLAMA_31_8B, "Q2_K", q6)
               - MEM.PUBLISHED_SIZES_8B["Q2_K"] * MEM.GB) < 1e6
    assert MEM.head_params(LLAMA_31_8B) / LLAMA_31_8B.n_params > 0.06


def test_llama_32_specs_and_the_opposite_bias():
    assert abs(MEM.LLAMA_32_1B.n_params / 1.236e9 - 1) < 0.01  # Meta: 1.23B
    assert abs(MEM.LLAMA_32_3B.n_params / 3.213e9 - 1) < 0.01  # Meta: 3.21B
    share = {s.name: MEM.head_params(s) / s.n_params
             for s in (MEM.LLAMA_32_1B, MEM.LLAMA_32_3B, LLAMA_31_8B, MEM.LLAMA_31_70B)}
    assert [round(v, 2) for v in share.values()] == [0.21, 0.12, 0.07, 0.01]
    q6 = 6.5625
    for spec in (MEM.LLAMA_32_1B, MEM.LLAMA_32_3B):  # a bigger Q6_K share: more bytes
        assert MEM.weights_with_head_apart(spec, "Q4_K_M", q6) > MEM.estimate_memory(
            spec, "Q4_K_M").weights


def test_types_that_need_an_imatrix_are_refused_with_the_reason(mini, tmp_path):
    for qtype in Q.NEEDS_IMATRIX:
        with pytest.raises(Q.QuantizationError, match="imatrix"):
            Q.quantize(mini, tmp_path / f"{qtype}.gguf", qtype)
        assert not list(tmp_path.glob("*"))
    out = Q.quantize(mini, tmp_path / "iq4.gguf", "IQ4_XS").path  # no imatrix needed
    assert Q.tensor_types(out).get("IQ4_XS", 0) > 0.8


def test_tied_mini_llama_keeps_its_embeddings_in_q6_k(tmp_path):
    tied = Q.write_mini_llama(tmp_path / "tied.gguf", Q.MiniLlamaSpec(tied=True))
    assert "output.weight" not in {t.name for t in Q._tensors(tied)}
    for qtype in ("Q2_K", "Q4_K_M"):
        out = Q.quantize(tied, tmp_path / f"{qtype}.gguf", qtype).path
        assert Q.tensor_type(out, "token_embd.weight") == "Q6_K"
