"""How much a small evaluation can say: intervals and tests for counts of right answers.

A course notebook scores a model on a handful of items (16 questions, 16 reviews). With so few,
a difference of one or two answers can be chance. These helpers put a number on it, with the
standard library only.
"""

from __future__ import annotations

import math


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % (by default) Wilson score interval for a proportion ``hits / n``.

    Better than ``p ± z·sqrt(p(1-p)/n)`` for small ``n`` and for proportions near 0 or 1.
    """
    if n <= 0:
        raise ValueError("n debe ser positivo.")
    if not 0 <= hits <= n:
        raise ValueError("hits debe estar entre 0 y n.")
    p = hits / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided p-value of a paired comparison (McNemar's exact test).

    ``wins``: items that A gets right and B wrong; ``losses``: the reverse. Items both get right
    (or both wrong) say nothing about which is better. Under "A and B are equally good" each
    discordant item is a fair coin: the p-value is the chance of a split at least this uneven.
    """
    if wins < 0 or losses < 0:
        raise ValueError("wins y losses no pueden ser negativos.")
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_comparison(a: list[bool], b: list[bool]) -> dict:
    """Right answers of A and B on the same items, the discordant items and the sign test."""
    if len(a) != len(b):
        raise ValueError("a y b deben tener la misma longitud (los mismos ítems).")
    wins = sum(x and not y for x, y in zip(a, b))
    losses = sum(y and not x for x, y in zip(a, b))
    return {"n": len(a), "aciertos A": sum(map(bool, a)), "aciertos B": sum(map(bool, b)),
            "solo A": wins, "solo B": losses, "p (signos)": sign_test(wins, losses)}


def describe_rate(hits: int, n: int) -> str:
    """``hits`` of ``n`` with its 95 % Wilson interval, as the chapters print it:
    ``"12 de 16 (intervalo del 95 %: 51%–90%)"``."""
    low, high = wilson_interval(hits, n)
    return f"{hits} de {n} (intervalo del 95 %: {low:.0%}–{high:.0%})"
