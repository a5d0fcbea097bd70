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
