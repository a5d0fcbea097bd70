"""The memory guard: GGUF header reader, estimates and clear errors, on simulated machines.

Big models are simulated with *header-only* GGUF files (real tensor table, no weights): a few
kilobytes on disk, nothing large is ever allocated.
"""

from __future__ import annotations

import numpy as np
import pytest

import course_utils as cu
from course_utils import memory_guard as M
from course_utils.errors import CourseError
from course_utils.hardware import GIB, GpuInfo

from .conftest import COLAB_T4, CPU_8GB, TINY_ONLINE

#: Published shapes: (layers, d_model, heads, kv heads, d_ff, tied output head)
LLAMA_SHAPES = {
    "Llama-3.2-1B": (16, 2048, 32, 8, 8192, True),
    "Llama-3.2-3B": (28, 3072, 24, 8, 8192, True),
    "Llama-3.1-8B": (32, 4096, 32, 8, 14336, False),
}
VOCAB = 128_256


def fake_llama_gguf(path, name: str = "Llama-3.1-8B", qtype: str = "Q4_K"):
    """A header-only GGUF with the tensor table of a real Llama 3.x (weights not written)."""
    import gguf

    n_layers, d, n_heads, n_kv, d_ff, tied = LLAMA_SHAPES[name]
    kv = n_kv * d // n_heads
    q = gguf.GGMLQuantizationType[qtype]
    block, size = gguf.GGML_QUANT_SIZES[q]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_block_count(n_layers)
    w.add_context_length(131072)
    w.add_embedding_length(d)
    w.add_feed_forward_length(d_ff)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)

    def matrix(tname, rows, cols):
        w.add_tensor_info(tname, (rows, cols * size // block), np.dtype(np.uint8),
                          rows * cols // block * size, raw_dtype=q)

    def vector(tname, n):
        w.add_tensor_info(tname, (n,), np.dtype(np.float32), 4 * n)

    matrix("token_embd.weight", VOCAB, d)
    vector("rope_freqs.weight", d // n_heads // 2)
    for i in range(n_layers):
        vector(f"blk.{i}.attn_norm.weight", d)
        matrix(f"blk.{i}.attn_q.weight", d, d)
        matrix(f"blk.{i}.attn_k.weight", kv, d)
        matrix(f"blk.{i}.attn_v.weight", kv, d)
        matrix(f"blk.{i}.attn_output.weight", d, d)
        vector(f"blk.{i}.ffn_norm.weight", d)
        matrix(f"blk.{i}.ffn_gate.weight", d_ff, d)
        matrix(f"blk.{i}.ffn_up.weight", d_ff, d)
        matrix(f"blk.{i}.ffn_down.weight", d, d_ff)
    vector("output_norm.weight", d)
    if not tied:
        matrix("output.weight", VOCAB, d)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fake-llamas")
    return {name: fake_llama_gguf(folder / f"{name}.gguf", name) for name in LLAMA_SHAPES}


# --------------------------------------------------------------------------- the reader


def test_header_reader_equals_gguf_reader_on_the_bundled_model():
    from gguf import GGUFReader

    path = cu.bundled_model_path()
    ours = M.read_gguf_header(path)
    theirs = GGUFReader(str(path))
    fields = {f.name: f for f in theirs.fields.values() if not f.name.startswith("GGUF.")}
    assert set(ours.fields) == set(fields)
    for key, field in fields.items():
        assert ours.fields[key] == field.contents(), key
        assert ours.types[key][0] == field.types[0], key
    assert list(ours.tensors) == [t.name for t in theirs.tensors]
    for t in theirs.tensors:
        mine = ours.tensors[t.name]
        assert (mine.n_elements, mine.n_bytes, mine.ggml_type, mine.offset) == (
            int(t.n_elements), int(t.n_bytes), int(t.tensor_type), int(t.data_offset))
    for t in (theirs.tensors[0], theirs.tensors[5]):  # token_embd (Q4_1 blocks), a norm (F32)
        assert np.array_equal(np.asarray(ours.tensor_data(t.name)).view(np.uint8).reshape(-1),
                              np.asarray(t.data).view(np.uint8).reshape(-1)), t.name
    assert ours.n_params == sum(int(t.n_elements) for t in theirs.tensors)


def test_header_of_the_llama3_standin_is_read_fast():
    import time

    path = cu.standin.standin_path("untied")
    M._read_header.cache_clear()
    start = time.perf_counter()
    header = M.read_gguf_header(path)
    assert time.perf_counter() - start < 5  # gguf.GGUFReader: tens of seconds for 128 256 tokens
    assert header.n_vocab == VOCAB and header.get("tokenizer.ggml.pre") == "llama-bpe"
    assert not header.tied_embeddings and "rope_freqs.weight" in header.tensors
    assert M.read_gguf_header(path) is header  # cached


def test_a_truncated_header_is_a_clear_error(tmp_path):
    bad = tmp_path / "cortado.gguf"
    bad.write_bytes(cu.bundled_model_path().read_bytes()[:5000])
    with pytest.raises(CourseError, match="incompleto"):
        M.read_gguf_header(bad)


def test_fake_llamas_have_the_published_sizes(fakes):
    n = {name: M.read_gguf_header(p).n_params for name, p in fakes.items()}
    assert 1.2e9 < n["Llama-3.2-1B"] < 1.3e9  # 1.24 B
    assert 3.1e9 < n["Llama-3.2-3B"] < 3.3e9  # 3.21 B
    assert 8.0e9 < n["Llama-3.1-8B"] < 8.1e9  # 8.03 B
    header = M.read_gguf_header(fakes["Llama-3.1-8B"])
    assert header.kv_cache_bytes(4096) == 2 * 32 * 8 * 128 * 4096 * 2  # 512 MiB
    assert 4.2e9 < header.tensor_bytes < 4.8e9  # ~4.5 bits per weight


# --------------------------------------------------------------------------- torch (float32)


@pytest.mark.parametrize("name, hw, fits", [
    ("Llama-3.2-1B", COLAB_T4, True),
    ("Llama-3.2-3B", COLAB_T4, False),   # 12.8 GB in float32: Colab's RAM dies
    ("Llama-3.1-8B", COLAB_T4, False),
    ("Llama-3.2-1B", CPU_8GB, False),    # 6 GiB available
    ("Llama-3.1-8B", CPU_8GB.with_changes(ram_available=64 * GIB), True),
])
def test_torch_estimate(fakes, name, hw, fits):
    estimate = M.torch_load_estimate(fakes[name], hw)
    n = M.read_gguf_header(fakes[name]).n_params
    assert estimate.need >= 4 * n and estimate.device == "RAM"
    assert estimate.fits is fits


def test_torch_guard_raises_a_clear_error_before_loading(fakes, monkeypatch):
    monkeypatch.delenv(M.ENV_SKIP, raising=False)
    with pytest.raises(M.InsufficientMemoryError) as info:
        M.check_torch_load(fakes["Llama-3.2-3B"], COLAB_T4)
    err = info.value
    assert isinstance(err, MemoryError) and isinstance(err, CourseError)
    text = str(err)
    assert "Llama-3.2-3B.gguf" in text and "GiB" in text and "3.2" in text  # the numbers
    assert "Unsloth" in text and "4 bits" in text and "Colab" in text  # the ways out
    assert M.ENV_SKIP in text
    # the loader itself refuses before reading a single weight (the fake file has none)
    with pytest.raises(M.InsufficientMemoryError):
        cu.finetune.load_torch_from_gguf(fakes["Llama-3.2-3B"], hw=COLAB_T4)
    # the learner may turn it off
    assert not M.check_torch_load(fakes["Llama-3.2-3B"], COLAB_T4, env={M.ENV_SKIP: "1"}).fits


# --------------------------------------------------------------------------- llama.cpp


def test_llama_cpp_estimate_counts_weights_kv_cache_and_buffers(fakes):
    header = M.read_gguf_header(fakes["Llama-3.1-8B"])
    small = M.llama_cpp_estimate(fakes["Llama-3.1-8B"], 4096, 0, CPU_8GB)
    big = M.llama_cpp_estimate(fakes["Llama-3.1-8B"], 131072, 0, CPU_8GB)
    assert small.need == header.tensor_bytes + header.kv_cache_bytes(4096) + M.LLAMA_CPP_OVERHEAD
    assert big.need - small.need == header.kv_cache_bytes(131072 - 4096)  # 15.5 GiB more
    assert small.fits and not big.fits  # 8B Q4 at 4k fits in 6 GiB; at 128k it does not


@pytest.mark.parametrize("hw, n_gpu_layers, device, fits", [
    (CPU_8GB, 0, "RAM", True),
    (TINY_ONLINE, 0, "RAM", False),  # 1.5 GiB available
    (COLAB_T4, -1, "GPU", True),
    (COLAB_T4.with_changes(gpu=GpuInfo("GTX 1650", 4 * GIB, 4 * GIB)), -1, "GPU", False),
    (COLAB_T4.with_changes(gpu=GpuInfo("GTX 1650", 4 * GIB, 4 * GIB)), 16, "RAM", True),
])
def test_llama_cpp_estimate_by_device(fakes, hw, n_gpu_layers, device, fits):
    estimate = M.llama_cpp_estimate(fakes["Llama-3.1-8B"], 4096, n_gpu_layers, hw)
    assert (estimate.device, estimate.fits) == (device, fits)


def test_llama_cpp_guard_message(fakes, monkeypatch):
    monkeypatch.delenv(M.ENV_SKIP, raising=False)
    gtx = COLAB_T4.with_changes(gpu=GpuInfo("GTX 1650", 4 * GIB, 4 * GIB))
    with pytest.raises(M.InsufficientMemoryError, match="n_gpu_layers con menos capas"):
        M.check_llama_cpp_load(fakes["Llama-3.1-8B"], 4096, -1, gtx)
    with pytest.raises(M.InsufficientMemoryError, match="caché KV") as info:
        M.check_llama_cpp_load(fakes["Llama-3.1-8B"], 4096, 0, TINY_ONLINE)
    assert "1.5 GiB disponibles" in str(info.value)


def test_load_llm_refuses_before_llama_cpp_allocates(monkeypatch, clean_env):
    """The guard inside models.load_choice: no Llama object is ever built."""
    from course_utils import course_llama

    monkeypatch.delenv(M.ENV_SKIP, raising=False)
    monkeypatch.setattr(M, "detect_hardware", lambda: TINY_ONLINE.with_changes(
        ram_available=100 * 2**20))
    monkeypatch.setattr(course_llama, "CourseLlama",
                        lambda *a, **k: pytest.fail("llama.cpp was asked to load the model"))
    with pytest.raises(M.InsufficientMemoryError, match="SmolLM2-135M-Instruct"):
        cu.load_llm(n_ctx=512)
    # and the bundled model fits on any machine that has a few hundred MB free
    assert M.llama_cpp_estimate(cu.bundled_model_path(), 4096, 0, TINY_ONLINE).fits
