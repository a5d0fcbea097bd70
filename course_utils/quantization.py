"""Quantizing GGUF files with llama.cpp (through llama-cpp-python) and measuring the result.

``quantize`` wraps ``llama_cpp.llama_model_quantize`` with the checks a learner needs: a missing
file, an unknown type or an already-quantized input get a clear error, and a failed run never
leaves a partial file behind. ``perplexity`` and ``compare_logprobs`` measure quality.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CourseError
from .models import validate_gguf

#: File types the course quantizes to, with llama.cpp's names.
QUANT_TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K", "Q4_0", "Q4_1",
               "Q5_0", "Q5_1", "Q4_K_S", "Q5_K_S", "Q3_K_S", "Q3_K_L")
UNQUANTIZED = {"F32", "F16", "BF16"}


class QuantizationError(CourseError, ValueError):
    """A quantization that cannot or should not run."""


def _ftype(qtype: str) -> int:
    import llama_cpp

    name = qtype.strip().upper()
    if name not in QUANT_TYPES:
        raise QuantizationError(
            f"No conozco el tipo de cuantización {qtype!r}. Tipos válidos: {', '.join(QUANT_TYPES)}."
        )
    return getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}")


def tensor_types(path: str | os.PathLike) -> dict[str, float]:
    """Share of the weights stored in each tensor type, e.g. ``{"Q4_K": 0.6, "Q6_K": 0.4}``."""
    from gguf import GGUFReader

    counts: Counter = Counter()
    for t in GGUFReader(str(validate_gguf(path))).tensors:
        counts[t.tensor_type.name] += int(t.n_elements)
    total = sum(counts.values())
    return {k: v / total for k, v in counts.most_common()}


def bits_per_weight(path: str | os.PathLike) -> float:
    """Average bits per weight of the tensors in a GGUF file (metadata excluded)."""
    from gguf import GGUFReader

    tensors = GGUFReader(str(validate_gguf(path))).tensors
    return 8 * sum(int(t.n_bytes) for t in tensors) / sum(int(t.n_elements) for t in tensors)


def is_quantized(path: str | os.PathLike) -> bool:
    """True if most weights of the file are in a quantized type (not F32/F16/BF16)."""
    types = tensor_types(path)
    return sum(share for t, share in types.items() if t not in UNQUANTIZED) > 0.5


@dataclass(frozen=True)
class QuantResult:
    path: Path
    qtype: str
    size_bytes: int
    seconds: float

    @property
    def bits_per_weight(self) -> float:
        return bits_per_weight(self.path)


def quantize(src: str | os.PathLike, dst: str | os.PathLike, qtype: str, *,
             allow_requantize: bool = False, nthread: int | None = None) -> QuantResult:
    """Quantize the GGUF ``src`` into ``dst`` with llama.cpp's ``qtype`` recipe.

    Quantizing an already-quantized file compounds the rounding errors: it is refused unless
    ``allow_requantize=True``. The output is written to a temporary name and renamed only on
    success, so a failure never leaves a partial ``dst``.
    """
    import llama_cpp

    from .course_llama import quiet_stderr
    from .hardware import physical_cores

    src = validate_gguf(src)
    dst = Path(dst).expanduser()
    ftype = _ftype(qtype)
    if dst.resolve() == src:
        raise QuantizationError("El archivo de salida no puede ser el mismo que el de entrada.")
    if not dst.parent.is_dir():
        raise QuantizationError(f"La carpeta de salida {dst.parent} no existe: créala primero.")
    if not allow_requantize and is_quantized(src):
        kinds = ", ".join(t for t in tensor_types(src) if t not in UNQUANTIZED)
        raise QuantizationError(
            f"'{src.name}' ya está cuantizado ({kinds}). Cuantizar otra vez suma un segundo error "
            "de redondeo al primero: parte de un GGUF en F16/F32 si lo tienes, o pasa "
            "allow_requantize=True si sabes lo que haces."
        )
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = allow_requantize
    params.nthread = nthread or physical_cores()
    partial = dst.with_name(dst.name + ".partial")
    start = time.perf_counter()
    try:
        with quiet_stderr():  # llama.cpp prints one line per tensor
            status = llama_cpp.llama_model_quantize(str(src).encode(), str(partial).encode(),
                                                    ctypes.byref(params))
        if status != 0:
            raise QuantizationError(
                f"llama.cpp no pudo cuantizar '{src.name}' a {qtype} (código {status}). "
                "Comprueba que el archivo de entrada está completo."
            )
        os.replace(partial, dst)
    finally:
        partial.unlink(missing_ok=True)
    return QuantResult(dst, qtype.upper(), dst.stat().st_size, time.perf_counter() - start)


# --------------------------------------------------------------------------- quality


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def token_logprobs(llm, text: str) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, logprobs)``: the text's tokens and, for each position, log-probabilities of the
    *next* token over the whole vocabulary (row ``i`` predicts token ``i + 1``).

    ``llm`` must be loaded with ``logits_all=True`` and a context that fits the text.
    """
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True)
    if len(tokens) > llm.n_ctx():
        raise ValueError(f"El texto ocupa {len(tokens)} tokens y n_ctx es {llm.n_ctx()}.")
    llm.reset()
    llm.eval(tokens)
    scores = np.array(llm.scores[: len(tokens) - 1], dtype=np.float32)
    llm.reset()
    return np.array(tokens), log_softmax(scores)


def perplexity(tokens: np.ndarray, logprobs: np.ndarray) -> float:
    """exp(mean negative log-likelihood of each actual next token)."""
    nll = -logprobs[np.arange(len(tokens) - 1), tokens[1:]]
    return float(np.exp(nll.mean()))


def compare_logprobs(reference: np.ndarray, other: np.ndarray) -> dict:
    """Mean KL(reference ‖ other) per token, and how often both pick the same top token."""
    kl = (np.exp(reference) * (reference - other)).sum(axis=-1)
    return {"kl": float(kl.mean()),
            "top1": float((reference.argmax(-1) == other.argmax(-1)).mean())}


# --------------------------------------------------------------------------- by hand, in numpy


def _blocks(w: np.ndarray, block_size: int | None) -> np.ndarray:
    flat = np.asarray(w, dtype=np.float32).reshape(-1)
    if block_size is None:
        return flat[None, :]
    if flat.size % block_size:
        raise ValueError(f"El tamaño del tensor ({flat.size}) no es múltiplo del bloque ({block_size}).")
    return flat.reshape(-1, block_size)


def absmax_quantize(w: np.ndarray, bits: int, block_size: int | None = 32) -> np.ndarray:
    """Symmetric quantization (like Q8_0 / Q4_0): one scale per block, ``q = round(w / d)``.

    Returns the *dequantized* weights, same shape as ``w``. ``block_size=None``: one scale for the
    whole tensor.
    """
    x = _blocks(w, block_size)
    qmax = 2 ** (bits - 1) - 1
    d = np.abs(x).max(axis=1, keepdims=True) / qmax
    d[d == 0] = 1.0
    q = np.clip(np.round(x / d), -qmax - 1, qmax)
    return (q * d).reshape(np.shape(w))


def minmax_quantize(w: np.ndarray, bits: int, block_size: int = 32) -> np.ndarray:
    """Asymmetric quantization (like Q4_1): a scale and a minimum per block, ``q = round((w - m) / d)``."""
    x = _blocks(w, block_size)
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    d = (hi - lo) / (2**bits - 1)
    d[d == 0] = 1.0
    q = np.clip(np.round((x - lo) / d), 0, 2**bits - 1)
    return (q * d + lo).reshape(np.shape(w))


def read_tensor(path: str | os.PathLike, name: str) -> np.ndarray:
    """A tensor of a GGUF file as float32 (dequantized if needed), in (rows, cols) order."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    for t in GGUFReader(str(validate_gguf(path))).tensors:
        if t.name == name:
            return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
    raise KeyError(f"No hay ningún tensor {name!r} en {Path(path).name}.")
