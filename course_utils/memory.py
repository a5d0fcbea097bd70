"""How much memory a model needs: weights (parameters × bits per weight) + KV cache + overhead.

Bits per weight come in two flavours:

* what one block of each GGUF tensor type stores: fixed by llama.cpp's layouts and read from
  ``gguf.GGML_QUANT_SIZES`` (:func:`course_utils.architecture.expected_bits_per_weight`), never
  typed in here;
* ``EFFECTIVE_BPW``: what a whole file of each *file type* averages for Llama 3.1 8B, measured from
  the published file sizes (``PUBLISHED_SIZES_8B``): the ``_M`` recipes keep some tensors at higher
  precision, so a "Q4_K_M" file averages ~4.9 bits, not 4.5.

The calculator uses the effective values; the course checks it against the published 70B sizes,
which it has not seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from .architecture import LLAMA_31_8B, ArchSpec

GB = 1e9
GIB = 1024**3

#: Published GGUF sizes (decimal GB) of Llama 3.1 8B Instruct (bartowski's repository).
PUBLISHED_SIZES_8B = {"F16": 16.07, "Q8_0": 8.54, "Q6_K": 6.60, "Q5_K_M": 5.73, "Q4_K_M": 4.92,
                      "Q3_K_M": 4.02, "Q2_K": 3.18}
#: Published GGUF sizes (decimal GB) of Llama 3.1 70B Instruct (bartowski's repository).
PUBLISHED_SIZES_70B = {"Q8_0": 74.98, "Q6_K": 57.89, "Q5_K_M": 49.95, "Q4_K_M": 42.52,
                       "Q3_K_M": 34.27, "Q2_K": 26.38}

#: Llama 3.1 70B as published by Meta (config.json of meta-llama/Llama-3.1-70B).
LLAMA_31_70B = ArchSpec(
    name="Llama 3.1 70B", n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, d_ff=28672,
    vocab_size=128256, context_length=131072, rope_theta=500000.0, norm_eps=1e-5,
    tied_embeddings=False,
)

#: Llama 3.2 1B and 3B as published by Meta (their config.json): tied embeddings, so the
#: embedding table is also the output head.
LLAMA_32_1B = ArchSpec(
    name="Llama 3.2 1B", n_layers=16, d_model=2048, n_heads=32, n_kv_heads=8, d_ff=8192,
    vocab_size=128256, context_length=131072, rope_theta=500000.0, norm_eps=1e-5,
    tied_embeddings=True, rope_scaling="llama3", rope_scaling_factor=32.0,
)
LLAMA_32_3B = ArchSpec(
    name="Llama 3.2 3B", n_layers=28, d_model=3072, n_heads=24, n_kv_heads=8, d_ff=8192,
    vocab_size=128256, context_length=131072, rope_theta=500000.0, norm_eps=1e-5,
    tied_embeddings=True, rope_scaling="llama3", rope_scaling_factor=32.0,
)

#: Effective bits per weight of each file type, from the 8B files.
EFFECTIVE_BPW = {name: size * GB * 8 / LLAMA_31_8B.n_params
                 for name, size in PUBLISHED_SIZES_8B.items()}

#: Compute buffers, the runtime and the process itself, on top of weights and KV cache.
OVERHEAD = 0.5 * GIB


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory to run one model in one quantization at one context size."""

    model: str
    quant: str
    n_ctx: int
    weights: float  #: bytes
    kv_cache: float  #: bytes
    overhead: float  #: bytes

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.overhead

    def row(self) -> dict:
        return {"modelo": self.model, "cuantización": self.quant, "n_ctx": self.n_ctx,
                "pesos (GB)": self.weights / GB, "KV cache (GB)": self.kv_cache / GB,
                "extra (GB)": self.overhead / GB, "total (GB)": self.total / GB}


def estimate_memory(spec: ArchSpec, quant: str, n_ctx: int = 8192,
                    kv_bytes_per_value: int = 2) -> MemoryEstimate:
    """Weights (effective bits per weight × parameters) + KV cache (f16) + fixed overhead."""
    if quant not in EFFECTIVE_BPW:
        raise ValueError(f"No conozco la cuantización {quant!r}. Opciones: {', '.join(EFFECTIVE_BPW)}.")
    if n_ctx <= 0:
        raise ValueError("n_ctx debe ser positivo.")
    weights = spec.n_params * EFFECTIVE_BPW[quant] / 8
    kv = spec.kv_cache_bytes(n_ctx, kv_bytes_per_value)
    return MemoryEstimate(spec.name, quant, n_ctx, weights, kv, OVERHEAD)


def largest_quant_that_fits(spec: ArchSpec, budget_bytes: float, n_ctx: int = 8192,
                            include_f16: bool = False) -> str | None:
    """The highest-precision file type whose estimate fits in ``budget_bytes`` (``None``: none).

    F16 is left out unless asked for: Q8_0 is practically indistinguishable (chapter 5 measures
    it), needs half the memory and runs faster.
    """
    candidates = [q for q in EFFECTIVE_BPW if include_f16 or q != "F16"]
    for quant in sorted(candidates, key=EFFECTIVE_BPW.get, reverse=True):
        if estimate_memory(spec, quant, n_ctx).total <= budget_bytes:
            return quant
    return None


def head_params(spec: ArchSpec) -> int:
    """Weights of the output head (``vocab × d_model``); with tied embeddings, the shared table."""
    return spec.vocab_size * spec.d_model


def weights_with_head_apart(spec: ArchSpec, quant: str, head_bpw: float) -> float:
    """Weight bytes of ``spec`` in ``quant`` with the output head counted at ``head_bpw`` bits.

    The llama.cpp recipes keep the output head in a higher type (Q6_K in every K-quant recipe)
    whatever the rest gets. :data:`EFFECTIVE_BPW` averages that head over Llama 3.1 8B, where it
    is 6.5 % of the weights; here the head's bits are taken out of the 8B file first, and the
    rest's average is applied to the rest of ``spec``.
    """
    head_8b = head_params(LLAMA_31_8B)
    rest_bits = EFFECTIVE_BPW[quant] * LLAMA_31_8B.n_params - head_bpw * head_8b
    rest_bpw = rest_bits / (LLAMA_31_8B.n_params - head_8b)
    head = head_params(spec)
    return (head * head_bpw + (spec.n_params - head) * rest_bpw) / 8
