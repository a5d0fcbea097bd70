import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from course_utils import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_quant_tradeoff_draws_the_line_and_the_other_types():
    bits = {"Q8_0": 8.5, "Q4_K_M": 4.9, "Q2_K": 3.2, "Q4_0": 4.6}
    error = {"Q8_0": 0.005, "Q4_K_M": 0.065, "Q2_K": 0.25, "Q4_0": 0.083}
    ax = plots.quant_tradeoff(bits, error, line=["Q8_0", "Q4_K_M", "Q2_K"], title="t")
    line, others = ax.get_lines()
    assert list(line.get_xdata()) == [8.5, 4.9, 3.2]
    assert list(line.get_ydata()) == pytest.approx([0.5, 6.5, 25.0])  # in %
    assert list(others.get_xdata()) == [4.6]
    assert sorted(t.get_text() for t in ax.texts) == sorted(bits)
    assert ax.get_title() == "t"


def test_quant_tradeoff_takes_pandas_series():
    import pandas as pd

    bits = pd.Series({"Q8_0": 8.5, "Q2_K": 3.2})
    error = pd.Series({"Q8_0": 0.005, "Q2_K": 0.25})
    ax = plots.quant_tradeoff(bits, error, line=["Q8_0", "Q2_K"])
    assert sorted(t.get_text() for t in ax.texts) == ["Q2_K", "Q8_0"]


def test_parameter_shares_stacks_every_part_to_100():
    from course_utils.architecture import LLAMA_31_8B

    ax = plots.parameter_shares({"8B": LLAMA_31_8B, "otro": LLAMA_31_8B}, title="p")
    bars = ax.patches
    assert len(bars) == 2 * len(plots.PARTS)
    first = bars[: len(plots.PARTS)]
    assert sum(b.get_width() for b in first) == pytest.approx(100)
    mlp = first[list(plots.PARTS).index("mlp (SwiGLU)")].get_width()
    parts = LLAMA_31_8B.param_breakdown()
    assert mlp == pytest.approx(100 * parts["mlp (SwiGLU)"] / LLAMA_31_8B.n_params)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["8B\n(8,030 M)", "otro\n(8,030 M)"]
    assert len(ax.get_legend().get_texts()) == len(plots.PARTS)


def test_thread_speeds_marks_the_course_choice():
    ax = plots.thread_speeds({1: 40.0, 2: 64.0}, physical_cores=2, llama_default=1)
    assert [b.get_height() for b in ax.patches] == [40.0, 64.0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["1 hilo\n(defecto llama-cpp)", "2 hilos\n(load_llm())"]
    assert ax.patches[1].get_facecolor() != ax.patches[0].get_facecolor()


def test_kv_cache_by_context_of_llama_31_8b():
    from course_utils.architecture import LLAMA_31_8B

    contexts = [2**k for k in range(11, 18)]
    ax = plots.kv_cache_by_context(LLAMA_31_8B, contexts, weights_bytes=4.9e9,
                                   weights_label="Q4_K_M")
    without, with_gqa, weights = ax.get_lines()
    assert with_gqa.get_ydata()[-1] == 16 and without.get_ydata()[-1] == 64  # GiB at 128 K
    assert weights.get_ydata()[0] == pytest.approx(4.9e9 / 1024**3)
    assert "8 cabezas K/V" in with_gqa.get_label() and "Llama 3.1 8B" in ax.get_title()
