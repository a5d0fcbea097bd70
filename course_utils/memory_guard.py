"""Will this model fit? Estimate the memory a GGUF needs *before* anything is allocated.

Two ways of loading a model in the course, two very different bills:

* **llama.cpp** (``load_llm``): the weights are mapped as they are stored (quantized), plus the
  KV cache for ``n_ctx`` tokens and some compute buffers. A 4.9 GB Q4_K_M of Llama 3.1 8B needs
  ~5.7 GB at 4 096 tokens of context.
* **torch** (``finetune.load_torch_from_gguf``, chapter 6): every weight is dequantized to float32,
  4 bytes per parameter, whatever the file's quantization: 5 GB for Llama 3.2 1B, 13 GB for 3B,
  32 GB for 8B. Colab's ~12.7 GB of RAM dies with no explanation when that does not fit.

:func:`check_torch_load` and :func:`check_llama_cpp_load` compare the estimate with the hardware
record (:func:`course_utils.detect_hardware`) and raise :class:`InsufficientMemoryError` (a
``CourseError`` and a ``MemoryError``) with the numbers and the way out, before anything is loaded.
``COURSE_SKIP_MEMORY_CHECK=1`` turns the check off for a learner who knows better (swap).

The numbers come from the GGUF header, read by :func:`read_gguf_header`: a view of the course's
one reader (:mod:`course_utils.gguf_reader`), which takes well under a second on a Llama 3 file
(``gguf.GGUFReader`` builds one numpy view per token and takes tens of seconds on Llama 3's
128 256 tokens and 280 000 merges).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CourseError
from .gguf_reader import read_gguf
from .hardware import GIB, HardwareInfo, detect_hardware

ENV_SKIP = "COURSE_SKIP_MEMORY_CHECK"
#: The Python process itself with torch and transformers imported, plus temporary copies.
TORCH_OVERHEAD = int(0.75 * GIB)
#: llama.cpp's compute buffers and the Python process around it (small models need less).
LLAMA_CPP_OVERHEAD = int(0.25 * GIB)
TORCH_BYTES_PER_PARAM = 4  #: float32, what load_torch_from_gguf builds


class InsufficientMemoryError(CourseError, MemoryError):
    """The model will not fit in this machine's memory (raised before loading anything)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  #: numpy order (rows first), the reverse of GGUF's dims
    ggml_type: int
    offset: int  #: absolute offset of the data in the file

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_bytes(self) -> int:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(self.ggml_type)]
        return self.n_elements // block * size


@dataclass
class GGUFHeader:
    """Metadata and tensor table of a GGUF file (no weights read)."""

    path: Path
    version: int
    file_size: int
    fields: dict[str, object] = field(default_factory=dict)  #: key -> value (lists for arrays)
    types: dict[str, tuple[int, int | None]] = field(default_factory=dict)  #: key -> (type, item type)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    def get(self, key: str, default=None):
        return self.fields.get(key, default)

    @property
    def arch(self) -> str:
        return str(self.fields.get("general.architecture", ""))

    def arch_get(self, key: str, default=None):
        return self.fields.get(f"{self.arch}.{key}", default)

    @property
    def n_params(self) -> int:
        """Weights stored in the file, counted tensor by tensor (``rope_freqs`` included)."""
        return sum(t.n_elements for t in self.tensors.values())

    @property
    def tensor_bytes(self) -> int:
        """Bytes of the weights as stored (quantized): what llama.cpp maps into memory."""
        return sum(t.n_bytes for t in self.tensors.values())

    @property
    def n_vocab(self) -> int:
        tokens = self.fields.get("tokenizer.ggml.tokens")
        return len(tokens) if tokens is not None else int(self.arch_get("vocab_size", 0))

    @property
    def tied_embeddings(self) -> bool:
        return "output.weight" not in self.tensors

    def tensor_data(self, name: str) -> np.ndarray:
        """The raw data of one tensor, memory-mapped (read-only): float32/float16 or quant blocks."""
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        info = self.tensors[name]
        qtype = GGMLQuantizationType(info.ggml_type)
        if qtype == GGMLQuantizationType.F32:
            dtype, shape = np.float32, info.shape
        elif qtype == GGMLQuantizationType.F16:
            dtype, shape = np.float16, info.shape
        else:
            block, size = GGML_QUANT_SIZES[qtype]
            dtype, shape = np.uint8, (*info.shape[:-1], info.shape[-1] // block * size)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=info.offset, shape=shape)

    def kv_cache_bytes(self, n_ctx: int, bytes_per_value: int = 2) -> int:
        """f16 K and V for ``n_ctx`` tokens in every layer (GQA: K/V heads only)."""
        n_layers = int(self.arch_get("block_count", 0))
        n_head = int(self.arch_get("attention.head_count", 1))
        n_kv = int(self.arch_get("attention.head_count_kv", n_head))
        d = int(self.arch_get("embedding_length", 0))
        head_dim = int(self.arch_get("attention.key_length", d // max(1, n_head)))
        return 2 * n_layers * n_kv * head_dim * n_ctx * bytes_per_value


def read_gguf_header(path: str | os.PathLike) -> GGUFHeader:
    """Read a GGUF file's metadata and tensor table (cached per file, size and modification time).

    A file cut short raises :class:`course_utils.gguf_reader.GgufReadError` (a ``CourseError``).
    """
    from .models import validate_gguf

    p = validate_gguf(path)
    st = p.stat()
    return _read_header(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_header(path: str, size: int, mtime_ns: int) -> GGUFHeader:
    del size, mtime_ns  # part of the cache key only (read_gguf checks them again)
    raw = read_gguf(path)
    header = GGUFHeader(path=raw.path, version=raw.version, file_size=raw.file_size,
                        fields=raw.fields, types=raw.types)
    # numpy order (rows first): the reverse of GGUF's dimensions
    header.tensors = {t.name: TensorInfo(t.name, tuple(reversed(t.dims)), t.ggml_type, t.offset)
                      for t in raw.tensors}
    return header


# --------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class MemoryEstimate:
    """What loading a model needs, where, and what there is."""

    what: str  #: "torch (float32)" or "llama.cpp"
    need: int  #: bytes in the memory that limits (RAM, or VRAM when ``device == "GPU"``)
    have: int  #: bytes available there
    device: str  #: "RAM" or "GPU"
    detail: str  #: how ``need`` was computed, in words

    @property
    def fits(self) -> bool:
        return self.need <= self.have

    def __str__(self) -> str:
        verdict = "cabe" if self.fits else "NO cabe"
        return (f"{self.what}: necesita ~{self.need / GIB:.1f} GiB de {self.device} "
                f"({self.detail}); hay {self.have / GIB:.1f} GiB disponibles: {verdict}.")


def torch_load_estimate(path: str | os.PathLike, hw: HardwareInfo | None = None) -> MemoryEstimate:
    """RAM to load the GGUF into torch in float32 (what chapter 6 trains on)."""
    header = read_gguf_header(path)
    hw = detect_hardware() if hw is None else hw
    n = header.n_params
    largest = max((t.n_elements for t in header.tensors.values()), default=0)
    need = n * TORCH_BYTES_PER_PARAM + largest * TORCH_BYTES_PER_PARAM + TORCH_OVERHEAD
    detail = (f"{n / 1e9:.2f} mil millones de parámetros × 4 bytes en float32 "
              f"+ {TORCH_OVERHEAD / GIB:.2f} GiB del proceso")
    return MemoryEstimate("torch (float32)", need, hw.ram_available, "RAM", detail)


def llama_cpp_estimate(path: str | os.PathLike, n_ctx: int, n_gpu_layers: int = 0,
                       hw: HardwareInfo | None = None) -> MemoryEstimate:
    """Memory to run the GGUF with llama.cpp: file + KV cache for ``n_ctx`` + buffers.

    With every layer on a CUDA GPU (``n_gpu_layers=-1``) the limit is the GPU's free memory;
    with some layers, their share goes to the GPU and the rest stays in RAM (the RAM is checked).
    """
    header = read_gguf_header(path)
    hw = detect_hardware() if hw is None else hw
    kv = header.kv_cache_bytes(n_ctx)
    weights = header.tensor_bytes
    total = weights + kv + LLAMA_CPP_OVERHEAD
    detail = (f"pesos {weights / GIB:.2f} GiB + caché KV de {n_ctx} tokens "
              f"{kv / GIB:.2f} GiB + {LLAMA_CPP_OVERHEAD / GIB:.2f} GiB de búferes")
    n_layers = max(1, int(header.arch_get("block_count", 1)))
    if hw.gpu is not None and n_gpu_layers != 0:
        share = 1.0 if n_gpu_layers < 0 else min(1.0, n_gpu_layers / n_layers)
        if share >= 1.0:
            return MemoryEstimate("llama.cpp", total, hw.model_memory, "GPU", detail)
        ram_need = int((weights + kv) * (1 - share)) + LLAMA_CPP_OVERHEAD
        return MemoryEstimate("llama.cpp", ram_need, hw.ram_available, "RAM",
                              f"{1 - share:.0%} de las capas en la CPU; {detail}")
    return MemoryEstimate("llama.cpp", total, hw.ram_available, "RAM", detail)


def _skipped(env) -> bool:
    env = os.environ if env is None else env
    return env.get(ENV_SKIP, "").strip().lower() in {"1", "true", "yes", "on", "si", "sí"}


def check_torch_load(path: str | os.PathLike, hw: HardwareInfo | None = None,
                     env: dict | None = None) -> MemoryEstimate:
    """Raise :class:`InsufficientMemoryError` if loading ``path`` into torch float32 won't fit."""
    estimate = torch_load_estimate(path, hw)
    if not estimate.fits and not _skipped(env):
        name = Path(path).name
        raise InsufficientMemoryError(
            f"No hay memoria para cargar '{name}' en torch: {estimate} Cargarlo igualmente "
            "bloquearía el equipo o el kernel moriría sin explicación. Salidas: (1) un modelo "
            "más pequeño (Llama 3.2 1B, o el modelo incluido: borra COURSE_MODEL); (2) en una "
            "GPU NVIDIA, entrena en 4 bits (QLoRA) con Unsloth, sección 8 del capítulo 6; en "
            "Colab, Entorno de ejecución → Cambiar tipo → GPU; (3) cierra otros programas. Si "
            f"sabes que tu sistema lo aguanta (swap), define {ENV_SKIP}=1."
        )
    return estimate


def check_llama_cpp_load(path: str | os.PathLike, n_ctx: int, n_gpu_layers: int = 0,
                         hw: HardwareInfo | None = None, env: dict | None = None) -> MemoryEstimate:
    """Raise :class:`InsufficientMemoryError` if llama.cpp cannot hold ``path`` at ``n_ctx``."""
    estimate = llama_cpp_estimate(path, n_ctx, n_gpu_layers, hw)
    if not estimate.fits and not _skipped(env):
        name = Path(path).name
        where = ("pasa n_gpu_layers con menos capas (el resto irá a la RAM), "
                 if estimate.device == "GPU" else "")
        raise InsufficientMemoryError(
            f"No hay memoria para ejecutar '{name}' con llama.cpp: {estimate} Salidas: "
            f"{where}una cuantización más pequeña (Q4_K_M) o un modelo más pequeño (Llama 3.2 "
            "1B/3B, o el incluido: borra COURSE_MODEL), un n_ctx menor (la caché KV crece con "
            f"él), o cierra otros programas. Si sabes que tu sistema lo aguanta, define {ENV_SKIP}=1."
        )
    return estimate
