"""``course_utils.bench`` times generation with ``perf.measure_speed``: one timer, not two."""

from course_utils import bench, perf


def test_bench_generation_speed_is_perf_measure_speed(monkeypatch):
    calls = []

    def fake_measure(llm, n_prompt, n_gen, start=0, repeats=1):
        calls.append((llm, n_prompt, n_gen, repeats))
        return perf.Measurement(n_prompt, n_gen, 1.0, 2.0, tg_runs=(30.0, 32.0, 31.0))

    monkeypatch.setattr(bench, "measure_speed", fake_measure)
    speed = bench.generation_speed("model", n_tokens=64, repeats=3)
    assert calls == [("model", bench.BENCH_PROMPT_TOKENS, 64, 3)]
    assert speed.median == 32.0  # perf's generation speed: 64 tokens in 2 s
    assert str(speed) == "32.0 tok/s (mín 30.0, máx 32.0)"


def test_bench_has_no_timing_loop_of_its_own():
    import inspect

    source = inspect.getsource(bench)
    assert "perf_counter" not in source.split("def load_time")[0]
    assert "def measure_speed" not in source
