"""The shape of a Llama-architecture model: read from a GGUF file or from published specs.

A Llama decoder layer is RMSNorm -> attention (RoPE, grouped-query) -> RMSNorm -> SwiGLU MLP.
Knowing the handful of numbers in :class:`ArchSpec` is enough to count parameters and to size the
KV cache, which the course checks against the real tensors of whatever GGUF is loaded (the bundled
SmolLM2 or any Llama 3.x). Llama 3.1+ files also store the "llama3" RoPE scaling as a small
``rope_freqs.weight`` tensor: fixed factors, not learned parameters, counted apart.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from .gguf_reader import GgufFile, read_gguf


# --------------------------------------------------------------------------- reading a GGUF


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file, as its index describes it (the weights are not read)."""

    name: str
    shape: tuple[int, ...]  #: GGUF order: innermost dimension first, e.g. (inputs, outputs)
    type_name: str  #: GGML type: ``"Q4_1"``, ``"Q4_K"``, ``"F16"``...
    n_elements: int
    n_bytes: int
    offset: int  #: from the start of the file


@dataclass(frozen=True)
class GgufIndex:
    """The metadata and the tensor index of a GGUF file (a view of :class:`GgufFile`)."""

    path: Path
    version: int
    fields: dict  #: key -> value (arrays as lists)
    field_bytes: dict  #: key -> bytes the key/value pair takes in the file
    tensors: tuple[TensorInfo, ...]
    data_offset: int  #: where the tensor data starts (aligned)
    raw: GgufFile  #: what the reader read, shared with ``memory_guard.read_gguf_header``

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(f"El archivo no tiene el tensor {name!r}.")

    def tensor_spans(self) -> dict[str, int]:
        """Bytes each tensor takes in the file, measured from where the next one starts (the
        last one: to the end of the file), alignment padding included.

        Unlike :attr:`TensorInfo.n_bytes`, computed from the type's block size, this is read from
        the file's own offsets: comparing both checks that the blocks are what the format says.
        """
        return self.raw.tensor_spans()

    def read_tensor(self, name: str):
        """The values of a small unquantized (F32/F16) tensor, e.g. ``rope_freqs.weight``."""
        import numpy as np

        t = self.tensor(name)
        dtype = {"F32": "<f4", "F16": "<f2"}.get(t.type_name)
        if dtype is None:
            raise ValueError(f"{name} es {t.type_name}: solo se leen tensores F32 o F16.")
        with open(self.path, "rb") as f:
            f.seek(t.offset)
            return np.frombuffer(f.read(t.n_bytes), dtype=dtype).reshape(t.shape[::-1])


@functools.lru_cache(maxsize=32)
def _index_of(raw: GgufFile) -> GgufIndex:
    tensors = tuple(TensorInfo(t.name, t.dims, t.type_name, t.n_elements, t.n_bytes, t.offset)
                    for t in raw.tensors)
    return GgufIndex(raw.path, raw.version, raw.fields, raw.field_bytes, tensors,
                     raw.data_offset, raw)


def read_gguf_index(path: str | os.PathLike) -> GgufIndex:
    """Read a GGUF's metadata and tensor index (not the weights), in well under a second.

    Same information as ``gguf.GGUFReader``, which parses every vocabulary entry into numpy
    objects and takes tens of seconds on a 128 256-token Llama 3 file. Read by
    :func:`course_utils.gguf_reader.read_gguf` and cached per file version.
    """
    return _index_of(read_gguf(path))


@dataclass(frozen=True)
class ArchSpec:
    """Hyper-parameters of a Llama-style decoder."""

    name: str
    n_layers: int
    d_model: int  #: hidden size (embedding length)
    n_heads: int  #: query heads
    n_kv_heads: int  #: key/value heads (GQA: fewer than query heads)
    d_ff: int  #: SwiGLU intermediate size
    vocab_size: int
    context_length: int  #: trained context (tokens)
    rope_theta: float
    norm_eps: float
    tied_embeddings: bool  #: output head shares the token-embedding matrix
    #: RoPE scaling: ``None``, ``"llama3"`` (Llama 3.1+: stored as ``rope_freqs.weight``) or the
    #: ``rope.scaling.type`` of the GGUF metadata (``"linear"``, ``"yarn"``...).
    rope_scaling: str | None = None
    rope_scaling_factor: float | None = None  #: how much the longest wavelengths are stretched

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def rope_freqs_values(self) -> int:
        """Numbers in ``rope_freqs.weight``: one factor per rotated pair (head_dim / 2) for the
        "llama3" scaling, 0 otherwise. Stored in the GGUF, but fixed: not a learned parameter."""
        return self.head_dim // 2 if self.rope_scaling == "llama3" else 0

    @property
    def n_stored(self) -> int:
        """Numbers a GGUF of this model stores: the parameters plus the RoPE factors."""
        return self.n_params + self.rope_freqs_values

    @property
    def gqa_group(self) -> int:
        """Query heads that share one key/value head."""
        return self.n_heads // self.n_kv_heads

    def param_breakdown(self) -> dict[str, int]:
        """Parameters per component (the formula; no biases in Llama)."""
        d, kv = self.d_model, self.n_kv_heads * self.head_dim
        attn = d * d + 2 * d * kv + d * d  # q, k, v, o
        mlp = 3 * d * self.d_ff  # gate, up, down (SwiGLU has three matrices)
        norms = 2 * d  # two RMSNorm weight vectors per layer
        return {
            "embeddings": self.vocab_size * d,
            "attention": self.n_layers * attn,
            "mlp (SwiGLU)": self.n_layers * mlp,
            "rmsnorm": self.n_layers * norms + d,  # + final norm
            "output head": 0 if self.tied_embeddings else self.vocab_size * d,
        }

    @property
    def n_params(self) -> int:
        return sum(self.param_breakdown().values())

    def kv_cache_bytes(self, n_ctx: int, bytes_per_value: int = 2, gqa: bool = True) -> int:
        """Memory of the KV cache for ``n_ctx`` tokens (f16 by default).

        ``gqa=False`` gives what it would be with one K/V head per query head (no GQA).
        """
        kv_heads = self.n_kv_heads if gqa else self.n_heads
        return 2 * self.n_layers * kv_heads * self.head_dim * n_ctx * bytes_per_value

    @classmethod
    def from_gguf(cls, path: str | os.PathLike) -> "ArchSpec":
        """Read the hyper-parameters from a GGUF file's metadata (no weights are loaded)."""
        index = read_gguf_index(path)
        fields = index.fields
        arch = fields["general.architecture"]

        def get(key: str):
            return fields[f"{arch}.{key}"]

        n_heads = int(get("attention.head_count"))
        tensors = {t.name for t in index.tensors}
        name = fields.get("general.name", arch)
        scaling, factor = None, None
        if "rope_freqs.weight" in tensors:  # llama.cpp's converter stores Llama 3's scaling here
            scaling = "llama3"
            factor = float(index.read_tensor("rope_freqs.weight").max())
        elif fields.get(f"{arch}.rope.scaling.type", "none") != "none":
            scaling = str(get("rope.scaling.type"))
            if f"{arch}.rope.scaling.factor" in fields:
                factor = float(get("rope.scaling.factor"))
        return cls(
            name=str(name),
            n_layers=int(get("block_count")),
            d_model=int(get("embedding_length")),
            n_heads=n_heads,
            n_kv_heads=int(get("attention.head_count_kv")) if f"{arch}.attention.head_count_kv" in fields else n_heads,
            d_ff=int(get("feed_forward_length")),
            vocab_size=len(fields["tokenizer.ggml.tokens"]),
            context_length=int(get("context_length")),
            rope_theta=float(get("rope.freq_base")) if f"{arch}.rope.freq_base" in fields else 10000.0,
            norm_eps=float(get("attention.layer_norm_rms_epsilon")),
            tied_embeddings="output.weight" not in tensors,
            rope_scaling=scaling,
            rope_scaling_factor=factor,
        )


def gguf_tensor_params(path: str | os.PathLike) -> int:
    """Total number of values stored in a GGUF file's tensors, counted tensor by tensor."""
    return sum(t.n_elements for t in read_gguf_index(path).tensors)


@dataclass(frozen=True)
class GgufLayout:
    """Where the bytes of a GGUF file go."""

    file_bytes: int
    header_bytes: int  #: everything before the tensor data: metadata, tensor index, alignment
    metadata_bytes: int  #: the key/value metadata alone
    tokenizer_bytes: int  #: the ``tokenizer.*`` keys (vocabulary, merges, template...)
    tensor_bytes: int  #: the weights
    padding_bytes: int  #: alignment between tensors, measured from the tensors' offsets

    @property
    def weight_share(self) -> float:
        return self.tensor_bytes / self.file_bytes


def gguf_layout(path: str | os.PathLike) -> GgufLayout:
    """Measure a GGUF: header (metadata + tensor index), weights and alignment padding."""
    index = read_gguf_index(path)
    tensor_bytes = sum(t.n_bytes for t in index.tensors)
    spans = index.tensor_spans()
    sizes = index.field_bytes
    return GgufLayout(
        file_bytes=index.raw.file_size,
        header_bytes=index.data_offset,
        metadata_bytes=sum(sizes.values()),
        tokenizer_bytes=sum(n for k, n in sizes.items() if k.startswith("tokenizer.")),
        tensor_bytes=tensor_bytes,
        padding_bytes=sum(spans[t.name] - t.n_bytes for t in index.tensors),
    )


def expected_bits_per_weight(type_name: str) -> float:
    """Bits per weight that a GGML tensor type takes by definition (block bytes / block size).

    ``"Q4_1"`` -> 5.0 (32 weights in 20 bytes), ``"Q8_0"`` -> 8.5, ``"F16"`` -> 16.0.
    """
    import gguf

    try:
        qtype = gguf.GGMLQuantizationType[type_name]
    except KeyError:
        raise ValueError(f"Tipo de tensor GGML desconocido: {type_name!r}.") from None
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return 8 * type_size / block_size


#: Llama 3.1 8B as published by Meta (``config.json`` of meta-llama/Llama-3.1-8B; its
#: ``rope_scaling``: type "llama3", factor 8, original context 8 192).
LLAMA_31_8B = ArchSpec(
    name="Llama 3.1 8B", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336,
    vocab_size=128256, context_length=131072, rope_theta=500000.0, norm_eps=1e-5,
    tied_embeddings=False, rope_scaling="llama3", rope_scaling_factor=8.0,
)
#: Published total of Llama 3.1 8B (model card: 8.03 B parameters).
LLAMA_31_8B_PUBLISHED_PARAMS = 8.03e9
