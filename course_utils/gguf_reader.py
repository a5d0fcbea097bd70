"""The course's one GGUF reader: metadata and tensor index, read in well under a second.

``gguf.GGUFReader`` (llama.cpp's Python library) builds numpy objects for every entry of the
vocabulary and takes tens of seconds on a Llama 3 file (128 256 tokens, 280 000 merges). This
reader walks the same bytes with ``struct`` and reads no weights. Two views are built on it:

* :func:`course_utils.architecture.read_gguf_index` (``GgufIndex``): the tensors as the GGUF
  lists them, with their sizes and offsets, for the chapters and the quantization helpers;
* :func:`course_utils.memory_guard.read_gguf_header` (``GGUFHeader``): the tensors by name, in
  numpy order, with memory-mapped data, for the memory checks and the GGUF export.

Values are what ``gguf.GGUFReader``'s ``contents()`` gives: arrays as Python lists. The result is
cached per file version (path, size, modification time) and shared: treat it as read-only.
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CourseError

# GGUF value types (gguf-py's GGUFValueType)
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}
NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?",
         10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32


class GgufReadError(CourseError, ValueError):
    """A GGUF file whose header cannot be read (cut short, or not a GGUF)."""


@dataclass(frozen=True)
class RawTensor:
    """One entry of the tensor index, as stored: GGUF dimension order, numeric type."""

    name: str
    dims: tuple[int, ...]  #: GGUF order: innermost (the row length) first
    ggml_type: int
    offset: int  #: absolute offset of the data in the file

    @property
    def type_name(self) -> str:
        import gguf

        return gguf.GGMLQuantizationType(self.ggml_type).name

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64))

    @property
    def n_bytes(self) -> int:
        """Bytes of the data, from the type's block layout (``gguf.GGML_QUANT_SIZES``)."""
        import gguf

        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(self.ggml_type)]
        return self.n_elements // block * size


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per file version
class GgufFile:
    """Everything a GGUF says before its tensor data."""

    path: Path
    version: int
    file_size: int
    fields: dict  #: key -> value (arrays as lists)
    types: dict  #: key -> (value type, item type of an array or ``None``)
    field_bytes: dict  #: key -> bytes the key/value pair takes in the file
    tensors: tuple[RawTensor, ...]
    data_offset: int  #: where the tensor data starts (aligned)

    @property
    def alignment(self) -> int:
        return int(self.fields.get("general.alignment", DEFAULT_ALIGNMENT))

    def tensor_spans(self) -> dict[str, int]:
        """Bytes each tensor takes in the file: from its offset to the next tensor's (the last
        one: to the end of the file), alignment padding included. Read from the file's own
        offsets, not from the type's block size."""
        order = sorted(self.tensors, key=lambda t: t.offset)
        ends = [t.offset for t in order[1:]] + [self.file_size]
        return {t.name: end - t.offset for t, end in zip(order, ends)}


def read_gguf(path: str | os.PathLike) -> GgufFile:
    """Read a GGUF's metadata and tensor index (not the weights), cached per file version."""
    from .models import validate_gguf

    p = validate_gguf(path)
    st = p.stat()
    return _read(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _read(path: str, size: int, mtime_ns: int) -> GgufFile:
    del mtime_ns  # part of the cache key only
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            return _parse(Path(path), buf, size)
        except (struct.error, ValueError, KeyError, IndexError) as exc:
            raise GgufReadError(f"No puedo leer la cabecera GGUF de '{path}' ({exc}): ¿archivo "
                                "incompleto? Vuelve a descargarlo.") from exc


def _parse(path: Path, buf, size: int) -> GgufFile:
    if buf[:4] != b"GGUF":
        raise ValueError("no empieza por los bytes GGUF")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    pos = 24

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", buf, pos)
        start, pos = pos + 8, pos + 8 + n
        if pos > size:
            raise ValueError("una cadena termina después del final del archivo")
        return buf[start:pos].decode("utf-8", errors="replace")

    def value(kind: int):
        nonlocal pos
        if kind == STRING:
            return string()
        if kind == ARRAY:
            item, count = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if item == STRING:
                return [string() for _ in range(count)]
            if item == ARRAY:
                return [value(ARRAY) for _ in range(count)]
            dtype = np.dtype(NUMPY[item])
            out = np.frombuffer(buf, dtype=dtype, count=count, offset=pos).tolist()
            pos += dtype.itemsize * count
            return out
        fmt = SCALARS[kind]
        (out,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return out

    fields, types, field_bytes = {}, {}, {}
    for _ in range(n_kv):
        start = pos
        key = string()
        (kind,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        item = struct.unpack_from("<I", buf, pos)[0] if kind == ARRAY else None
        fields[key] = value(kind)
        types[key] = (kind, item)
        field_bytes[key] = pos - start
    infos = []
    for _ in range(n_tensors):
        name = string()
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
        kind, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        infos.append((name, tuple(int(d) for d in dims), int(kind), int(offset)))
    alignment = int(fields.get("general.alignment", DEFAULT_ALIGNMENT))
    data_offset = pos + (-pos) % alignment
    tensors = tuple(RawTensor(name, dims, kind, data_offset + off) for name, dims, kind, off in infos)
    return GgufFile(path, int(version), size, fields, types, field_bytes, tensors, data_offset)
