"""``course_utils.bench`` times generation with ``perf.measure_speed``: one timer, not two."""

from course_utils import bench, perf


def test_bench_has_no_timing_loop_of_its_own():
    import inspect

    source = inspect.getsource(bench)
    assert "perf_counter" not in source.split("def load_time")[0]
    assert "def measure_speed" not in source
    assert not hasattr(bench, "generation_speed")  # chapters time with perf.measure_speed


def test_the_training_benchmark_uses_chapter_06s_settings():
    """The LoRA settings ``make bench`` times are the ones chapter 06's training cell uses."""
    import ast
    import json
    from pathlib import Path

    nb = json.loads(next((Path(__file__).parent.parent / "notebooks").glob("06_*.ipynb")).read_text())
    sources = ["".join(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "code"]
    calls = [node for source in sources if "%pip" not in source  # the install cell is not Python
             for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LoraConfig"]
    cpu = [{k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in bench.CHAPTER06_LORA}
           for call in calls if any(k.arg == "first_layer" for k in call.keywords)]
    assert cpu == [bench.CHAPTER06_LORA]
