"""The chapters' figures, one call each (matplotlib; the notebooks only pass their numbers).

Every function draws on a new figure, shows nothing by itself and returns the ``Axes`` it drew
on, so a notebook can adjust a label or call ``plt.show()``, and a test can inspect what was
drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def quant_tradeoff(bits: Mapping[str, float], error: Mapping[str, float],
                   line: Sequence[str], title: str = "",
                   line_label: str = "recetas de Q8_0 a Q2_K", others_label: str = "otros tipos"):
    """Relative weight error against bits per weight, one point per file type.

    ``line``: the types joined by a line, in order (a family such as the usual recipes); the
    other types are drawn as separate markers. Errors are fractions (0.05 = 5 %), shown in %.
    """
    import matplotlib.pyplot as plt

    bits, error = dict(bits), dict(error)  # a pandas Series iterates over its values
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot([bits[q] for q in line], [100 * error[q] for q in line], "o-", color="tab:blue",
            label=line_label)
    others = [q for q in bits if q not in line]
    if others:
        ax.plot([bits[q] for q in others], [100 * error[q] for q in others], "s",
                color="tab:red", label=others_label)
    for q in bits:  # the line's names to the right, the others' to the left
        right = q in line
        ax.annotate(q, (bits[q], 100 * error[q]), fontsize=8, xytext=(5 if right else -5, 4),
                    textcoords="offset points", ha="left" if right else "right")
    ax.margins(x=0.08)
    ax.set_xlabel("bits por peso (medidos en el archivo)")
    ax.set_ylabel("error relativo de los pesos (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return ax
