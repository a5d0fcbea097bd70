"""Accuracy with its bootstrap interval (chapter 06 reports every accuracy with one)."""

import math

import pytest

from course_utils.metrics import bootstrap_interval, classification_report


def test_interval_contains_the_accuracy_and_has_the_binomial_width():
    hits = [True] * 70 + [False] * 17  # 80 % of 87, as chapter 06's test set
    lo, hi = bootstrap_interval(hits)
    acc = 70 / 87
    assert lo < acc < hi
    se = math.sqrt(acc * (1 - acc) / 87)  # normal approximation: ±1.96 se
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_more_items_narrower_interval_and_reproducible():
    small = bootstrap_interval([True, False] * 20)
    large = bootstrap_interval([True, False] * 500)
    assert (large[1] - large[0]) < (small[1] - small[0]) / 3
    assert bootstrap_interval([True, False] * 20) == small  # fixed seed


def test_degenerate_cases():
    assert bootstrap_interval([True] * 10) == (1.0, 1.0)
    assert bootstrap_interval([]) == (0.0, 0.0)


def test_classification_report_includes_the_interval():
    report = classification_report(["A", "B", "A", "B"], ["A", "B", None, "A"], ["A", "B"])
    assert report["accuracy"] == 0.5
    lo, hi = report["accuracy_ci"]
    assert lo <= 0.5 <= hi
