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


#: The parts of a Llama model in :func:`parameter_shares`: key of
#: ``ArchSpec.param_breakdown()`` -> label in the legend.
PARTS = {
    "embeddings": "embeddings",
    "attention": "atención",
    "mlp (SwiGLU)": "MLP (SwiGLU)",
    "rmsnorm": "RMSNorm",
    "output head": "proyección de salida",
}
PART_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def parameter_shares(models: Mapping[str, object], title: str = "¿Dónde están los parámetros?"):
    """One horizontal bar per model, split into the share (%) of each part of :data:`PARTS`.

    ``models``: label -> an :class:`~course_utils.architecture.ArchSpec` (or anything with
    ``param_breakdown()`` and ``n_params``). Shares above 4 % are written on the bar.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.6 + 1.0 * len(models)))
    for row, spec in enumerate(models.values()):
        breakdown = spec.param_breakdown()
        left = 0.0
        for (part, legend), colour in zip(PARTS.items(), PART_COLOURS):
            share = 100 * breakdown[part] / spec.n_params
            ax.barh(row, share, left=left, color=colour, label=legend if row == 0 else None)
            if share > 4:
                ax.text(left + share / 2, row, f"{share:.0f}%", ha="center", va="center",
                        color="white")
            left += share
    ax.set_yticks(range(len(models)),
                  [f"{name}\n({spec.n_params / 1e6:,.0f} M)" for name, spec in models.items()])
    ax.set_xlabel("% de los parámetros")
    ax.set_title(title)
    ax.legend(ncols=len(PARTS), loc="upper center", bbox_to_anchor=(0.5, -0.35), fontsize=8)
    fig.tight_layout()
    return ax


def thread_speeds(speeds: Mapping[int, float], physical_cores: int, llama_default: int):
    """Bars of generation speed (tokens/s) for each ``n_threads`` measured.

    The bar of ``physical_cores`` (what ``load_llm()`` uses) is green; ``llama_default``
    (llama-cpp-python's ``cpu_count() // 2``) and ``load_llm()`` are named under their bars.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels, colours = [], []
    for n in speeds:
        tags = [tag for tag, cond in (("defecto llama-cpp", n == llama_default),
                                      ("load_llm()", n == physical_cores)) if cond]
        name = f"{n} hilo{'s' if n > 1 else ''}"
        labels.append(name + (f"\n({', '.join(tags)})" if tags else ""))
        colours.append("tab:green" if n == physical_cores else "tab:gray")
    values = list(speeds.values())
    bars = ax.bar(labels, values, color=colours)
    ax.bar_label(bars, fmt="%.0f tok/s")
    ax.set_ylabel("tokens por segundo (mediana)")
    ax.set_title(f"Velocidad de generación con {physical_cores} núcleos físicos")
    ax.set_ylim(0, max(values) * 1.25)
    fig.tight_layout()
    return ax


def kv_cache_by_context(spec, contexts: Sequence[int], weights_bytes: float | None = None,
                        weights_label: str = "pesos"):
    """KV cache (GiB, f16) of ``spec`` against ``n_ctx``, with and without GQA.

    ``spec``: an :class:`~course_utils.architecture.ArchSpec`. ``weights_bytes``: a horizontal
    line for the size of the weights, to compare. ``contexts`` are powers of two (x axis in
    base 2, labelled in K).
    """
    import matplotlib.pyplot as plt

    gib = 1024**3
    with_gqa = [spec.kv_cache_bytes(int(n)) / gib for n in contexts]
    without = [spec.kv_cache_bytes(int(n), gqa=False) / gib for n in contexts]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.plot(contexts, without, "o--", color="tab:red",
            label=f"sin GQA ({spec.n_heads} cabezas K/V)")
    ax.plot(contexts, with_gqa, "o-", color="tab:green",
            label=f"con GQA ({spec.n_kv_heads} cabezas K/V)")
    if weights_bytes is not None:
        ax.axhline(weights_bytes / gib, color="tab:gray", ls=":",
                   label=f"{weights_label} ({weights_bytes / gib:.1f} GiB)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(contexts), [f"{int(n) // 1024} K" for n in contexts])
    ax.set_xlabel("n_ctx (tokens)")
    ax.set_ylabel("KV cache en f16 (GiB)")
    ax.set_title(f"{spec.name}: memoria de la KV cache")
    ax.legend()
    fig.tight_layout()
    return ax
