"""Small-sample statistics used to hedge the chapters' conclusions."""

import math

import pytest

from course_utils import stats


def test_wilson_interval_known_values():
    lo, hi = stats.wilson_interval(8, 16)
    assert math.isclose(lo, 0.2800, abs_tol=1e-3) and math.isclose(hi, 0.7200, abs_tol=1e-3)
    lo, hi = stats.wilson_interval(0, 10)
    assert lo == 0.0 and math.isclose(hi, 0.2775, abs_tol=1e-3)
    lo, hi = stats.wilson_interval(10, 10)
    assert math.isclose(lo, 0.7225, abs_tol=1e-3) and hi == 1.0


def test_wilson_interval_narrows_with_n():
    small, large = stats.wilson_interval(6, 8), stats.wilson_interval(600, 800)
    assert small[1] - small[0] > 4 * (large[1] - large[0])
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 2)


def test_sign_test_exact_values():
    assert stats.sign_test(0, 0) == 1.0
    assert math.isclose(stats.sign_test(5, 0), 2 / 32)  # 0.0625: not significant at 5 %
    assert math.isclose(stats.sign_test(6, 0), 2 / 64)
    assert math.isclose(stats.sign_test(3, 3), 1.0)
    assert math.isclose(stats.sign_test(7, 1), 2 * 9 / 256)
    assert stats.sign_test(1, 7) == stats.sign_test(7, 1)


def test_paired_comparison_counts_only_discordant_items():
    a = [True, True, True, False, False, True]
    b = [True, False, False, False, True, True]
    result = stats.paired_comparison(a, b)
    assert (result["aciertos A"], result["aciertos B"], result["solo A"], result["solo B"]) == (4, 3, 2, 1)
    assert math.isclose(result["p (signos)"], 1.0)
    with pytest.raises(ValueError):
        stats.paired_comparison([True], [])


def test_describe_rate_prints_the_wilson_interval():
    assert stats.describe_rate(8, 16) == "8 de 16 (intervalo del 95 %: 28%–72%)"
    with pytest.raises(ValueError):
        stats.describe_rate(3, 0)
