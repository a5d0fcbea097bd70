"""Export a (merged) Hugging Face Llama model to a GGUF file that llama.cpp loads.

The tokenizer, chat template and hyper-parameters are copied from a *template* GGUF of the same
model (the one it was loaded from); the weights come from the torch model. llama.cpp stores the
Q and K projections with the rotary dimensions interleaved differently from Hugging Face, so
those two matrices are permuted back (the same ``permute`` that llama.cpp's
``convert_hf_to_gguf.py`` applies).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .errors import CourseError
from .models import validate_gguf

GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
MOSTLY_F16 = 1


class ExportError(CourseError, ValueError):
    """A model that cannot be exported with this template."""


def gguf_name(hf_name: str) -> str:
    """Hugging Face tensor name -> GGUF tensor name (``KeyError`` if unknown)."""
    if hf_name in GGUF_NAMES:
        return GGUF_NAMES[hf_name]
    match = _LAYER.match(hf_name)
    if match and match.group(2) in LAYER_NAMES:
        return f"blk.{match.group(1)}.{LAYER_NAMES[match.group(2)]}"
    raise KeyError(f"No sé a qué tensor GGUF corresponde {hf_name!r}.")


def permute_for_llama_cpp(w: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face rotary layout -> llama.cpp's (applied to attn_q with n_head, attn_k with n_head_kv)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str):
    field = reader.get_field(key)
    return None if field is None else field.contents()


def export_gguf(model, template: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``model`` (a merged ``LlamaForCausalLM``) as an F16 GGUF using ``template``'s metadata.

    Raises :class:`ExportError` if the model's shape does not match the template (a different
    model), and never leaves a partial file.
    """
    import gguf

    template = validate_gguf(template)
    out = Path(out)
    reader = gguf.GGUFReader(str(template))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ExportError(f"Solo sé exportar arquitectura 'llama'; la plantilla es {arch!r}.")
    cfg = model.config
    expected = {
        "capas": (cfg.num_hidden_layers, _field(reader, "llama.block_count")),
        "dimensión oculta": (cfg.hidden_size, _field(reader, "llama.embedding_length")),
        "cabezas": (cfg.num_attention_heads, _field(reader, "llama.attention.head_count")),
        "cabezas K/V": (cfg.num_key_value_heads, _field(reader, "llama.attention.head_count_kv")),
        "vocabulario": (cfg.vocab_size, len(_field(reader, "tokenizer.ggml.tokens"))),
    }
    wrong = {k: v for k, v in expected.items() if int(v[0]) != int(v[1])}
    if wrong:
        details = ", ".join(f"{k}: modelo {a} frente a plantilla {b}" for k, (a, b) in wrong.items())
        raise ExportError(f"El modelo no coincide con la plantilla GGUF ({details}). Usa como "
                          "plantilla el GGUF del mismo modelo que entrenaste.")

    writer = gguf.GGUFWriter(str(out) + ".partial", arch)
    try:
        for field in reader.fields.values():
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            value = MOSTLY_F16 if field.name == "general.file_type" else field.contents()
            writer.add_key_value(field.name, value, vtype, sub_type=sub)
        tied = getattr(cfg, "tie_word_embeddings", False)
        for name, tensor in model.state_dict().items():
            if name == "lm_head.weight" and tied:
                continue
            w = tensor.detach().float().cpu().numpy()
            if name.endswith("self_attn.q_proj.weight"):
                w = permute_for_llama_cpp(w, cfg.num_attention_heads)
            elif name.endswith("self_attn.k_proj.weight"):
                w = permute_for_llama_cpp(w, cfg.num_key_value_heads)
            writer.add_tensor(gguf_name(name), w.astype(np.float16 if w.ndim == 2 else np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(str(out) + ".partial", out)
    finally:
        Path(str(out) + ".partial").unlink(missing_ok=True)
    return out


def compare_with_llama_cpp(model, gguf_path: str | os.PathLike, prompts: list[str]) -> dict:
    """Feed the same token ids to the torch model and to llama.cpp; compare last-token logits.

    Returns the largest absolute logit difference, the largest difference relative to the logit
    range, and how many prompts agree on the most probable next token.
    """
    import torch

    from .models import load_llm

    llm = load_llm(str(gguf_path), n_ctx=512)
    max_abs, max_rel, agree = 0.0, 0.0, 0
    for prompt in prompts:
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        ours = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).copy()
        with torch.no_grad():
            theirs = model(torch.tensor([ids])).logits[0, -1].float().numpy()
        diff = np.abs(ours - theirs).max()
        max_abs = max(max_abs, float(diff))
        max_rel = max(max_rel, float(diff / (theirs.max() - theirs.min())))
        agree += int(ours.argmax() == theirs.argmax())
    llm.close()
    return {"max_abs_diff": max_abs, "max_rel_diff": max_rel, "top1_agree": agree,
            "prompts": len(prompts)}
