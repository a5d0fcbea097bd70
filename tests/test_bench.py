"""``course_utils.bench`` times generation with ``perf.measure_speed``: one timer, not two."""

from course_utils import bench, perf


def test_bench_has_no_timing_loop_of_its_own():
    import inspect

    source = inspect.getsource(bench)
    assert "perf_counter" not in source.split("def load_time")[0]
    assert "def measure_speed" not in source
    assert not hasattr(bench, "generation_speed")  # chapters time with perf.measure_speed
