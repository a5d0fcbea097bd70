"""The shape of a Llama-architecture model: read from a GGUF file or from published specs.

A Llama decoder layer is RMSNorm -> attention (RoPE, grouped-query) -> RMSNorm -> SwiGLU MLP.
Knowing the handful of numbers in :class:`ArchSpec` is enough to count parameters and to size the
KV cache, which the course checks against the real tensors of the bundled GGUF.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .models import validate_gguf


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

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

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
        from gguf import GGUFReader

        reader = GGUFReader(str(validate_gguf(path)))
        fields = reader.fields
        arch = fields["general.architecture"].contents()

        def get(key: str):
            return fields[f"{arch}.{key}"].contents()

        n_heads = int(get("attention.head_count"))
        tensor_names = {t.name for t in reader.tensors}
        name = fields["general.name"].contents() if "general.name" in fields else arch
        return cls(
            name=str(name),
            n_layers=int(get("block_count")),
            d_model=int(get("embedding_length")),
            n_heads=n_heads,
            n_kv_heads=int(get("attention.head_count_kv")) if f"{arch}.attention.head_count_kv" in fields else n_heads,
            d_ff=int(get("feed_forward_length")),
            vocab_size=len(fields["tokenizer.ggml.tokens"].contents()),
            context_length=int(get("context_length")),
            rope_theta=float(get("rope.freq_base")) if f"{arch}.rope.freq_base" in fields else 10000.0,
            norm_eps=float(get("attention.layer_norm_rms_epsilon")),
            tied_embeddings="output.weight" not in tensor_names,
        )


def gguf_tensor_params(path: str | os.PathLike) -> int:
    """Total number of weights stored in a GGUF file, counted tensor by tensor."""
    from gguf import GGUFReader

    return sum(int(t.n_elements) for t in GGUFReader(str(validate_gguf(path))).tensors)


#: Llama 3.1 8B as published by Meta (``config.json`` of meta-llama/Llama-3.1-8B).
LLAMA_31_8B = ArchSpec(
    name="Llama 3.1 8B", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336,
    vocab_size=128256, context_length=131072, rope_theta=500000.0, norm_eps=1e-5,
    tied_embeddings=False,
)
#: Published total of Llama 3.1 8B (model card: 8.03 B parameters).
LLAMA_31_8B_PUBLISHED_PARAMS = 8.03e9
