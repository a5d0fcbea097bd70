"""Writing GGUF files: atomically, and the decoder blocks of a Llama with random weights.

Shared by :mod:`gguf_export` (the fine-tuned model and its LoRA adapter), :mod:`standin` (the
tests' Llama 3 stand-in) and :mod:`quantization` (chapter 05's mini Llama).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_gguf_writer(out: str | os.PathLike, arch: str):
    """A ``gguf.GGUFWriter`` on ``<out>.partial``; ``out`` appears only if the block finishes
    (header, metadata and tensors written), never as a partial file."""
    import gguf

    out = Path(out)
    partial = Path(str(out) + ".partial")
    writer = gguf.GGUFWriter(str(partial), arch)
    try:
        yield writer
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def add_llama_blocks(writer, n_layers: int, d_model: int, kv_dim: int, d_ff: int,
                     vocab_size: int, tied: bool,
                     matrix: Callable[[int, int], np.ndarray]) -> None:
    """Add the decoder blocks, the final norm and (if not ``tied``) the output head of a Llama.

    ``matrix(rows, cols)`` makes each weight matrix in numpy's (out, in) order (gguf-py reverses
    it into GGUF's); norms are ones in F32, as llama.cpp's converter writes them.
    """
    ones = np.ones(d_model, dtype=np.float32)
    for i in range(n_layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", ones)
        writer.add_tensor(p + "attn_q.weight", matrix(d_model, d_model))
        writer.add_tensor(p + "attn_k.weight", matrix(kv_dim, d_model))
        writer.add_tensor(p + "attn_v.weight", matrix(kv_dim, d_model))
        writer.add_tensor(p + "attn_output.weight", matrix(d_model, d_model))
        writer.add_tensor(p + "ffn_norm.weight", ones)
        writer.add_tensor(p + "ffn_gate.weight", matrix(d_ff, d_model))
        writer.add_tensor(p + "ffn_up.weight", matrix(d_ff, d_model))
        writer.add_tensor(p + "ffn_down.weight", matrix(d_model, d_ff))
    writer.add_tensor("output_norm.weight", ones)
    if not tied:
        writer.add_tensor("output.weight", matrix(vocab_size, d_model))
