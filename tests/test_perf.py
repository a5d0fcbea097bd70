"""Benchmark helpers of chapter 07 (small real measurements: correctness, not speed budgets)."""

import pytest

import course_utils as cu
from course_utils import batching, perf

from .conftest import APPLE_M2, COLAB_T4, CPU_8GB


@pytest.fixture(scope="module")
def llm():
    return cu.load_llm(n_ctx=256)


def test_speed_arithmetic():
    s = perf.Measurement(n_prompt=100, n_gen=10, prompt_seconds=0.5, gen_seconds=2.0)
    assert (s.pp, s.tg) == (200, 5)
    assert s.as_row() == {"prompt (tok/s)": 200.0, "generación (tok/s)": 5.0}


def test_filler_tokens_has_exact_length(llm):
    for n in (1, 7, 200):
        assert len(perf.filler_tokens(llm, n)) == n


def test_measure_speed_on_the_bundled_model(llm):
    s = perf.measure_speed(llm, n_prompt=32, n_gen=4, start=16)
    assert (s.n_prompt, s.n_gen) == (32, 4)
    assert s.pp > 0 and s.tg > 0
    assert llm.n_tokens == 0  # the cache is left empty


def test_measure_speed_keeps_each_runs_generation_speed(llm):
    s = perf.measure_speed(llm, n_prompt=4, n_gen=4, repeats=3)
    assert len(s.tg_runs) == 3 and all(v > 0 for v in s.tg_runs)
    assert min(s.tg_runs) <= s.tg <= max(s.tg_runs)  # the median of three runs
    assert s.tg_summary().startswith(f"{s.tg:.1f} tok/s (mín ")


def test_tg_summary_of_a_single_run_has_no_spread():
    s = perf.Measurement(n_prompt=10, n_gen=20, prompt_seconds=1.0, gen_seconds=2.0,
                         tg_runs=(10.0,))
    assert s.tg_summary() == "10.0 tok/s"


def test_generation_by_depth(llm):
    rows = perf.generation_by_depth(llm, [64, 0, 128], n_gen=8)
    assert [d for d, _ in rows] == [0, 64, 128] and all(v > 0 for _, v in rows)
    assert llm.n_tokens == 0
    with pytest.raises(perf.BenchmarkSetupError, match="n_ctx"):
        perf.generation_by_depth(llm, [0, 250], n_gen=8)
    with pytest.raises(perf.BenchmarkSetupError, match="distar"):
        perf.generation_by_depth(llm, [0, 4], n_gen=8)


def test_measure_speed_refuses_more_tokens_than_the_window(llm):
    with pytest.raises(perf.BenchmarkSetupError, match="n_ctx"):
        perf.measure_speed(llm, n_prompt=250, n_gen=10)
    with pytest.raises(perf.BenchmarkSetupError):
        perf.measure_speed(llm, n_prompt=0, n_gen=4)


def test_sweep_loads_measures_and_closes_each_model():
    closed = []

    class Fake:
        def __init__(self, value):
            self.value = value

        def close(self):
            closed.append(self.value)

    calls = []

    def fake_measure(llm, n_prompt, n_gen, start=0, repeats=1):
        calls.append((llm.value, n_prompt))
        return perf.Measurement(n_prompt, n_gen, 1.0, 1.0)

    import course_utils.perf as module

    original = module.measure_speed
    module.measure_speed = fake_measure
    try:
        rows = perf.sweep(Fake, [1, 2], n_prompt=64, n_gen=8, progress=False)
    finally:
        module.measure_speed = original
    assert [v for v, _ in rows] == [1, 2] and closed == [1, 2]
    assert calls == [(1, 32), (1, 64), (2, 32), (2, 64)]  # warm-up, then the measure


def test_generation_ceiling():
    assert perf.generation_ceiling(100_000_000, 20.0) == pytest.approx(200.0)
    with pytest.raises(ValueError):
        perf.generation_ceiling(0, 20.0)


def test_memory_bandwidth_is_plausible():
    assert 0.5 < perf.memory_bandwidth(size_mb=64, repeats=2) < 2000
    assert 0.5 < perf.memory_bandwidth(size_mb=64, repeats=2, threads=1) < 2000


def test_percentile():
    assert perf.percentile([1, 2, 3, 4], 50) == 2.5
    assert perf.percentile([5], 95) == 5
    with pytest.raises(ValueError):
        perf.percentile([], 50)


def test_common_prefix_length():
    assert batching.common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert batching.common_prefix_length([[1], [2]]) == 0
    assert batching.common_prefix_length([]) == 0


def test_complete_many_gives_the_same_answers_with_and_without_prefix_reuse(llm):
    shared = "Responde con una palabra. " * 8
    prompts = [shared + f"Pregunta {i}: ¿de qué color es el cielo?\nRespuesta:" for i in range(3)]
    reuse = batching.complete_many(llm, prompts, max_tokens=4, progress=False)
    fresh = batching.complete_many(llm, prompts, max_tokens=4, progress=False,
                                   reuse_prefix=False)
    assert reuse.answers == fresh.answers
    assert reuse.prompt_tokens == fresh.prompt_tokens > 0
    assert len(reuse.latencies) == 3 and reuse.prompts_per_second > 0
    chat = batching.complete_many(llm, [[{"role": "user", "content": "Hola"}]], max_tokens=4,
                                  progress=False)
    assert len(chat.answers) == 1 and chat.completion_tokens >= 1


# --------------------------------------------------------------------------- CPU or GPU decoding


def test_cpu_decoding_follows_the_hardware_record(clean_env, no_network, gpu_build):
    """GPU-offloaded models (CUDA/Metal with a GPU build) are not checked against CPU claims."""
    assert perf.cpu_decoding(cu.choose_model(hw=CPU_8GB))
    t4 = cu.choose_model(hw=COLAB_T4)
    assert t4.n_gpu_layers == -1 and not perf.cpu_decoding(t4)
    assert not perf.cpu_decoding(cu.choose_model(hw=APPLE_M2))


def test_cpu_decoding_with_a_cpu_only_build_on_a_gpu_machine(clean_env, no_network, monkeypatch):
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    assert perf.cpu_decoding(cu.choose_model(hw=COLAB_T4))  # nothing offloaded: CPU decoding


def test_cpu_decoding_of_a_loaded_model_and_of_a_partial_offload(llm):
    assert perf.cpu_decoding(llm)  # this machine, bundled model: n_gpu_layers == 0
    partial = cu.choose_model(hw=CPU_8GB)
    from dataclasses import replace

    assert not perf.cpu_decoding(replace(partial, n_gpu_layers=12))
    with pytest.raises(TypeError, match="ModelChoice"):
        perf.cpu_decoding("modelo.gguf")


def test_check_on_cpu_asserts_on_cpu_and_explains_on_gpu(clean_env, no_network, gpu_build,
                                                          capsys, monkeypatch):
    monkeypatch.setattr(perf, "other_cpu_load", lambda interval=1.0: 0.0)  # a quiet machine
    cpu, gpu = cu.choose_model(hw=CPU_8GB), cu.choose_model(hw=COLAB_T4)
    assert perf.check_on_cpu("más hilos, más rápido", True, cpu, "razón")
    with pytest.raises(AssertionError, match="más hilos"):
        perf.check_on_cpu("más hilos, más rápido", False, cpu, "razón")
    assert perf.check_on_cpu("más hilos, más rápido", False, gpu,
                             "en GPU no dependen de los hilos") is False
    out = capsys.readouterr().out
    assert "✔ más hilos" in out and "no se cumple aquí" in out and "en GPU no dependen" in out


def test_check_on_cpu_does_not_assert_an_effect_too_small_to_measure(clean_env, no_network,
                                                                     capsys, monkeypatch):
    monkeypatch.setattr(perf, "other_cpu_load", lambda interval=1.0: 0.0)
    cpu = cu.choose_model(hw=CPU_8GB)
    kwargs = dict(min_effect=0.1, why_small="la caché añade solo un 2 %")
    assert perf.check_on_cpu("más lento con la caché llena", False, cpu, "GPU", effect=0.02,
                             **kwargs) is False
    assert "la caché añade solo un 2 %" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        perf.check_on_cpu("más lento con la caché llena", False, cpu, "GPU", effect=0.3, **kwargs)


def test_check_on_cpu_does_not_blame_the_model_for_a_busy_machine(clean_env, no_network, capsys,
                                                                   monkeypatch):
    cpu = cu.choose_model(hw=CPU_8GB)
    monkeypatch.setattr(perf, "other_cpu_load", lambda interval=1.0: 0.9)
    assert perf.check_on_cpu("más hilos, más rápido", False, cpu, "GPU") is False
    assert "otros programas usan ahora un 90%" in capsys.readouterr().out
    assert perf.check_on_cpu("más hilos, más rápido", True, cpu, "GPU")  # a true claim still shows
    with pytest.raises(AssertionError):  # not a timing: the load does not excuse it
        perf.check_on_cpu("la memoria sigue la fórmula", False, cpu, "GPU", timing=False)


def test_other_cpu_load_is_a_share():
    assert 0.0 <= perf.other_cpu_load(interval=0.1) <= 1.0


# --------------------------------------------------------------------------- bytes read per token


def test_bytes_per_token_leaves_out_an_untied_embedding_matrix():
    from course_utils import standin
    from course_utils.architecture import read_gguf_index

    for variant in ("tied", "untied"):
        path = standin.standin_path(variant)
        tensors = {t.name: t for t in read_gguf_index(path).tensors}
        weights = sum(t.n_bytes for t in tensors.values())
        embd = tensors["token_embd.weight"]
        if variant == "tied":  # the matrix is also the output head: read whole
            assert perf.bytes_per_token(path) == weights
        else:  # only the looked-up row of the input embeddings
            vocab = embd.shape[-1]
            assert perf.bytes_per_token(path) == weights - embd.n_bytes + embd.n_bytes // vocab
    bundled = cu.models.bundled_model_path()
    assert perf.bytes_per_token(bundled) < bundled.stat().st_size  # metadata is not weights


def test_complete_many_counts_the_tokens_it_runs(llm):
    """Prefix reuse, counted: the shared prefix is run once, then only what each prompt adds."""
    prefix = perf.filler_tokens(llm, 60)
    prompts = [prefix + llm.tokenize(f" número {n} de la lista".encode(), add_bos=False)
               for n in ("uno", "dos", "tres")]
    shared = batching.common_prefix_length(prompts)
    assert shared >= len(prefix)
    fresh = batching.complete_many(llm, prompts, reuse_prefix=False, max_tokens=1, progress=False)
    reuse = batching.complete_many(llm, prompts, max_tokens=1, progress=False)
    assert fresh.evaluated_tokens == sum(len(p) for p in prompts) == fresh.prompt_tokens
    assert reuse.evaluated_tokens == shared + sum(len(p) - shared for p in prompts)
    assert reuse.answers == fresh.answers
    assert "eval" not in vars(llm)  # the counter is removed afterwards
