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
from .gguf_writing import add_llama_blocks, atomic_gguf_writer
from .models import validate_gguf

#: File types the course quantizes to, with llama.cpp's names.
#: The very-low-bit recipes llama.cpp refuses to make without an importance matrix (*imatrix*,
#: made by ``llama-imatrix`` and passed with ``llama-quantize --imatrix``): it bails out with
#: "this quantization requires an importance matrix" (measured; see tests/test_quantization.py).
#: ``llama_model_quantize`` through llama-cpp-python cannot be given one, so these types are here
#: only to explain the refusal.
NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS",
                 "Q2_K_S")
QUANT_TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K", "Q4_0", "Q4_1",
               "Q5_0", "Q5_1", "Q4_K_S", "Q5_K_S", "Q3_K_S", "Q3_K_L",
               "IQ4_XS", "IQ4_NL", "IQ3_S", "IQ3_M") + NEEDS_IMATRIX
UNQUANTIZED = {"F32", "F16", "BF16"}
#: Bits per weight of the unquantized types.
NOMINAL_BITS = {"F32": 32.0, "F16": 16.0, "BF16": 16.0}
#: Values per row a K-quant super-block holds: a tensor whose rows are not a multiple of it
#: cannot be stored in a ``*_K`` type, and llama.cpp falls back to an older type.
QK_K = 256
K_TYPES = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"}


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


def _index(path: str | os.PathLike):
    """Metadata and tensor index of a GGUF file (no weights), cached per file version.

    ``gguf.GGUFReader`` parses every token of the vocabulary into numpy objects: tens of seconds
    for Llama 3's 128 256 tokens and 280 000 merges. ``read_gguf_index`` (the course's one reader,
    :mod:`course_utils.gguf_reader`) takes about a second and keeps the files this chapter reads
    several times.
    """
    from .architecture import read_gguf_index

    return read_gguf_index(path)


def _tensors(path: str | os.PathLike) -> tuple:
    return _index(path).tensors


def _type_name(tensor) -> str:
    return tensor.type_name


def tensor_types(path: str | os.PathLike) -> dict[str, float]:
    """Share of the weights stored in each tensor type, e.g. ``{"Q4_K": 0.6, "Q6_K": 0.4}``."""
    counts: Counter = Counter()
    for t in _tensors(path):
        counts[_type_name(t)] += int(t.n_elements)
    total = sum(counts.values())
    return {k: v / total for k, v in counts.most_common()}


def bits_per_weight(path: str | os.PathLike) -> float:
    """Average bits per weight of the tensors in a GGUF file (metadata excluded)."""
    tensors = _tensors(path)
    return 8 * sum(int(t.n_bytes) for t in tensors) / sum(int(t.n_elements) for t in tensors)


def stored_bits_per_weight(path: str | os.PathLike) -> dict[str, float]:
    """Bits per weight of each tensor type of a GGUF file, from the bytes the file gives it.

    Measured between the tensors' offsets (alignment padding included: a few bytes per tensor),
    not computed from the type's block size, so it can be compared with
    :func:`course_utils.architecture.expected_bits_per_weight`.
    """
    spans = _index(path).tensor_spans()
    stored: Counter = Counter()
    weights: Counter = Counter()
    for t in _tensors(path):
        stored[_type_name(t)] += spans[t.name]
        weights[_type_name(t)] += int(t.n_elements)
    return {k: 8 * stored[k] / weights[k] for k in weights}


def is_quantized(path: str | os.PathLike) -> bool:
    """True if most weights of the file are in a quantized type (not F32/F16/BF16)."""
    types = tensor_types(path)
    return sum(share for t, share in types.items() if t not in UNQUANTIZED) > 0.5


def file_type(path: str | os.PathLike) -> str:
    """llama.cpp's name for the type of a whole GGUF file: ``"Q4_1"``, ``"Q4_K_M"``, ``"F16"``…

    Read from ``general.file_type``; a file without that key gets the type of most of its weights.
    """
    from gguf import LlamaFileType

    value = _index(path).fields.get("general.file_type")
    if value is not None:
        try:
            name = LlamaFileType(int(value)).name
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:  # a type newer than this gguf package: fall through
            pass
    return next(iter(tensor_types(path)))


def tensor_type(path: str | os.PathLike, name: str) -> str:
    """Storage type of one tensor of a GGUF file (``"Q4_1"``, ``"F16"``…)."""
    for t in _tensors(path):
        if t.name == name:
            return _type_name(t)
    raise KeyError(f"No hay ningún tensor {name!r} en {Path(path).name}.")


def _matrices(path):
    return [t for t in _tensors(path) if len(t.shape) >= 2]


def k_quant_share(path: str | os.PathLike) -> dict[str, float]:
    """How much of the weight matrices (2-D tensors; norms are never quantized) can use K-quants.

    ``"previsto"``: share of the matrices' weights whose rows (GGUF's first dimension) are a
    multiple of :data:`QK_K` = 256, the only ones a ``*_K`` type can store; ``"en el archivo"``:
    share actually stored in a K type. For a ``*_K_M`` file quantized by llama.cpp both agree:
    every other matrix fell back to an older type (Q5_0, Q5_1, Q8_0…).
    """
    matrices = _matrices(path)
    total = sum(int(t.n_elements) for t in matrices)
    # GGUF order: the first dimension is the length of each row
    fits = sum(int(t.n_elements) for t in matrices if int(t.shape[0]) % QK_K == 0)
    stored = sum(int(t.n_elements) for t in matrices if _type_name(t) in K_TYPES)
    return {"previsto": fits / total, "en el archivo": stored / total}


def model_dims(path: str | os.PathLike) -> dict[str, int]:
    """The widths of the model's matrices, from the GGUF metadata: ``d_model``, ``d_ff`` and ``kv``
    (the width of K and V: K/V heads × head dimension). K-quants need rows that are multiples of 256.
    """
    fields = _index(path).fields
    arch = fields.get("general.architecture", "llama")

    def get(key, default=None):
        return fields.get(f"{arch}.{key}", default)

    d, n_head = int(get("embedding_length")), int(get("attention.head_count"))
    n_kv = int(get("attention.head_count_kv", n_head))
    head_dim = int(get("attention.key_length", d // n_head))
    return {"d_model": d, "d_ff": int(get("feed_forward_length")), "kv": n_kv * head_dim}


def file_stem(name: str) -> str:
    """A file-name-safe, lower-case stem for a model name: ``"Llama 3.2 1B"`` -> ``"llama-3.2-1b"``."""
    import re

    stem = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.")
    return stem or "modelo"


@dataclass(frozen=True)
class Reference:
    """The unquantized file a chapter quantizes from and measures against."""

    path: Path  #: the F16/BF16/F32 file
    qtype: str  #: its type: ``"F16"``, ``"BF16"`` or ``"F32"``
    source: Path  #: the model's own file
    source_type: str  #: the type of the model's own file (``"Q4_1"``, ``"Q4_K_M"``, ``"F16"``…)
    seconds: float

    @property
    def dequantized(self) -> bool:
        """True when the model's file was quantized and the reference is its expansion to F16."""
        return self.path != self.source

    def describe(self) -> str:
        """One paragraph in Spanish: what the reference is and what that means for the measures."""
        size = self.path.stat().st_size / 1e6
        if not self.dequantized:
            return (f"Tu archivo ya está en {self.qtype} (sin cuantizar): es la referencia tal cual "
                    f"({size:,.0f} MB). Las medidas son respecto a los pesos originales.")
        return (f"Tu archivo está en {self.source_type}: llama.cpp lo ha descomprimido a F16 "
                f"({size:,.0f} MB en {self.seconds:.1f} s, allow_requantize=True). Ese F16 "
                f"reproduce los pesos de {self.source_type} con su redondeo incluido, no los "
                "originales: las medidas son respecto a él, y cada cuantización nueva suma su "
                f"redondeo al de {self.source_type}.")


def unquantized_reference(src: str | os.PathLike, folder: str | os.PathLike,
                          stem: str | None = None) -> Reference:
    """The model ``src`` unquantized, to quantize from and to measure against.

    An F16/BF16/F32 file is used as it is. A quantized one (the bundled Q4_1, a downloaded
    Q4_K_M) is expanded by llama.cpp to ``folder/<stem>-f16.gguf``: that keeps the values the
    quantized file stores, rounding error included; the original 16-bit weights are gone, so
    the measures that follow are relative to this file, not to the original model.
    """
    src = validate_gguf(src)
    source_type = file_type(src)
    if not is_quantized(src):
        types = tensor_types(src)
        kind = max((t for t in types if t in UNQUANTIZED), key=types.get, default=source_type)
        return Reference(src, kind, src, source_type, 0.0)
    out = Path(folder) / f"{stem or file_stem(src.stem)}-f16.gguf"
    result = quantize(src, out, "F16", allow_requantize=True)
    return Reference(result.path, "F16", src, source_type, result.seconds)


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
        if status != 0 and qtype.strip().upper() in NEEDS_IMATRIX:
            raise QuantizationError(
                f"llama.cpp no hace {qtype} sin una matriz de importancia (imatrix): con tan pocos "
                "bits, redondear sin saber qué pesos importan más estropea el modelo. Créala con "
                "llama-imatrix (un texto de calibración pasado por el modelo en F16) y cuantiza con "
                "llama-quantize --imatrix; o elige un tipo que no la necesita (Q2_K, IQ3_S, "
                "IQ4_XS…)."
            )
        if status != 0:
            import shutil

            free = shutil.disk_usage(dst.parent).free
            hint = ("Comprueba que el archivo de entrada está completo." if free > src.stat().st_size
                    else f"Solo quedan {free / 1e9:.1f} GB libres en {dst.parent}: libera espacio "
                    "o escribe en otro disco (la variable TMPDIR elige la carpeta temporal).")
            raise QuantizationError(
                f"llama.cpp no pudo cuantizar '{src.name}' a {qtype} (código {status}). {hint}"
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
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    found = [t for t in _tensors(path) if t.name == name]
    if not found:
        raise KeyError(f"No hay ningún tensor {name!r} en {Path(path).name}.")
    t = found[0]
    qtype = GGMLQuantizationType[t.type_name]
    block, size = GGML_QUANT_SIZES[qtype]
    raw = np.fromfile(validate_gguf(path), dtype=np.uint8, count=t.n_bytes, offset=t.offset)
    rows = tuple(reversed(t.shape[1:]))  # numpy order: outer dimensions first, bytes of a row last
    data = raw.reshape(*rows, t.shape[0] // block * size)
    return np.asarray(dequantize(data, qtype), dtype=np.float32)


# --------------------------------------------------------------------------- K-quants, for real


@dataclass(frozen=True)
class MiniLlamaSpec:
    """A tiny Llama whose matrices all have rows that are multiples of 256: K-quants apply to all.

    Its proportions follow Llama 3.1 8B's, so llama.cpp's recipes mix their types the same way:
    GQA groups of 4, an output head apart from the embeddings, embeddings plus head ~13 % of the
    weights (8B: 13 %) and 8 layers (the ``_M`` recipes give more bits to the same share of
    layers as with 32). The weights are random (normal): it measures the *formats*, not a model.
    """

    n_layers: int = 8
    d_model: int = 256
    d_ff: int = 768
    n_heads: int = 4
    n_kv_heads: int = 1
    vocab_size: int = 1792
    seed: int = 0
    tied: bool = False  #: no ``output.weight``: the embeddings are the head (Llama 3.2 1B/3B)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


MINI_LLAMA = MiniLlamaSpec()


def write_mini_llama(path: str | os.PathLike, spec: MiniLlamaSpec = MINI_LLAMA) -> Path:
    """Write the F16 GGUF of ``spec`` (random weights, no tokenizer) to ``path`` and return it.

    Enough for ``llama_model_quantize``, which reads the architecture and the tensors only; it is
    not meant to be loaded for generation.
    """
    import gguf

    path = Path(path)
    rng = np.random.default_rng(spec.seed)
    d, kv = spec.d_model, spec.n_kv_heads * spec.head_dim

    def matrix(rows: int, cols: int) -> np.ndarray:  # numpy (out, in): GGUF stores (in, out)
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    with atomic_gguf_writer(path, "llama") as writer:
        writer.add_name("mini-llama")
        writer.add_block_count(spec.n_layers)
        writer.add_context_length(2048)
        writer.add_embedding_length(d)
        writer.add_feed_forward_length(spec.d_ff)
        writer.add_head_count(spec.n_heads)
        writer.add_head_count_kv(spec.n_kv_heads)
        writer.add_rope_freq_base(500_000.0)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_vocab_size(spec.vocab_size)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_tensor("token_embd.weight", matrix(spec.vocab_size, d))
        add_llama_blocks(writer, spec.n_layers, d, kv, spec.d_ff, spec.vocab_size, spec.tied,
                         matrix)
    return path


def weight_error(reference: str | os.PathLike, quantized: str | os.PathLike) -> float:
    """Relative RMS error of the weight matrices of ``quantized`` with respect to ``reference``.

    ``sqrt(Σ (q − r)² / Σ r²)`` over every 2-D tensor (norms are never quantized), each read back
    and dequantized from the file. Both files must have the same tensors; meant for small models
    (it reads every matrix into memory, one at a time).
    """
    err = norm = 0.0
    for t in _matrices(reference):
        r = read_tensor(reference, t.name).astype(np.float64)
        q = read_tensor(quantized, t.name).astype(np.float64)
        err += float(((q - r) ** 2).sum())
        norm += float((r**2).sum())
    return float(np.sqrt(err / norm))
