"""Export a (merged) Hugging Face Llama model to a GGUF file that llama.cpp loads.

The tokenizer, chat template and hyper-parameters are copied from a *template* GGUF of the same
model (the one it was loaded from); the weights come from the torch model. llama.cpp stores the
Q and K projections with the rotary dimensions interleaved differently from Hugging Face, so
those two matrices are permuted back (the same ``permute`` that llama.cpp's
``convert_hf_to_gguf.py`` applies).

The tensors are the template's, one by one: a Llama 3.1/3.2 file also stores its RoPE scaling as
``rope_freqs.weight`` (fixed factors, not weights: copied from the template), and the output head
is written only where the template has one (``output.weight``: Llama 3.1 8B; 3.2 1B/3B and SmolLM2
tie it to the embeddings). The result has exactly the template's tensors, or no file at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .errors import CourseError
from .gguf_writing import atomic_gguf_writer
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


def hf_name(gguf_tensor: str) -> str:
    """GGUF tensor name -> Hugging Face name (``KeyError`` if unknown); inverse of :func:`gguf_name`."""
    for hf, gg in GGUF_NAMES.items():
        if gg == gguf_tensor:
            return hf
    match = re.match(r"^blk\.(\d+)\.(.+)$", gguf_tensor)
    if match:
        for hf, gg in LAYER_NAMES.items():
            if gg == match.group(2):
                return f"model.layers.{match.group(1)}.{hf}"
    raise KeyError(f"No sé a qué tensor de Hugging Face corresponde {gguf_tensor!r}.")


def permute_for_llama_cpp(w: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face rotary layout -> llama.cpp's (applied to attn_q with n_head, attn_k with n_head_kv)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def export_gguf(model, template: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``model`` (a merged ``LlamaForCausalLM``) as an F16 GGUF using ``template``'s metadata.

    Every tensor of the template is written, in its order: from the model where the model has it
    (matrices in F16, norms in F32), copied from the template where it is not a weight
    (``rope_freqs.weight``). Raises :class:`ExportError` if the model's shape does not match the
    template (a different model), or if the model's output head is tied and the template's is not
    (or the reverse); never leaves a partial file.
    """
    import gguf

    from .memory_guard import read_gguf_header

    template = validate_gguf(template)
    out = Path(out)
    header = read_gguf_header(template)
    arch = header.arch
    if arch != "llama":
        raise ExportError(f"Solo sé exportar arquitectura 'llama'; la plantilla es {arch!r}.")
    cfg = model.config
    expected = {
        "capas": (cfg.num_hidden_layers, header.arch_get("block_count")),
        "dimensión oculta": (cfg.hidden_size, header.arch_get("embedding_length")),
        "cabezas": (cfg.num_attention_heads, header.arch_get("attention.head_count")),
        "cabezas K/V": (cfg.num_key_value_heads, header.arch_get("attention.head_count_kv")),
        "vocabulario": (cfg.vocab_size, header.n_vocab),
    }
    wrong = {k: v for k, v in expected.items() if int(v[0]) != int(v[1] or 0)}
    if wrong:
        details = ", ".join(f"{k}: modelo {a} frente a plantilla {b}" for k, (a, b) in wrong.items())
        raise ExportError(f"El modelo no coincide con la plantilla GGUF ({details}). Usa como "
                          "plantilla el GGUF del mismo modelo que entrenaste.")
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    if tied != header.tied_embeddings:
        have = "atada a los embeddings" if tied else "propia (lm_head)"
        want = "no tiene output.weight (atada)" if header.tied_embeddings else "tiene output.weight"
        raise ExportError(f"El modelo tiene la cabeza de salida {have} y la plantilla {want}: "
                          "no son el mismo modelo. Usa como plantilla el GGUF que entrenaste.")

    weights = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue
        try:
            weights[gguf_name(name)] = (name, tensor)
        except KeyError:
            raise ExportError(f"El modelo tiene el tensor {name!r}, que un GGUF 'llama' no "
                              "guarda: ¿fusionaste LoRA (cu.finetune.merge) antes de exportar?") from None
    missing = [n for n in header.tensors if n not in weights and n != "rope_freqs.weight"]
    extra = [n for n in weights if n not in header.tensors]
    if missing or extra:
        raise ExportError(f"Los tensores del modelo no son los de la plantilla: faltan {missing[:4]}, "
                          f"sobran {extra[:4]}. Usa como plantilla el GGUF que entrenaste.")

    with atomic_gguf_writer(out, arch) as writer:
        for key, value in header.fields.items():
            if key == gguf.Keys.General.ARCHITECTURE or key.startswith("GGUF."):
                continue
            vtype, sub = header.types[key]
            vtype = gguf.GGUFValueType(vtype)
            sub = gguf.GGUFValueType(sub) if sub is not None else None
            value = MOSTLY_F16 if key == "general.file_type" else value
            writer.add_key_value(key, value, vtype, sub_type=sub)
        for gname, info in header.tensors.items():
            if gname not in weights:  # rope_freqs.weight: Llama 3's fixed RoPE factors
                qtype = gguf.GGMLQuantizationType(info.ggml_type)
                plain = qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
                writer.add_tensor(gname, np.array(header.tensor_data(gname)),
                                  raw_dtype=None if plain else qtype)
                continue
            hf, tensor = weights[gname]
            w = tensor.detach().float().cpu().numpy()
            if hf.endswith("self_attn.q_proj.weight"):
                w = permute_for_llama_cpp(w, cfg.num_attention_heads)
            elif hf.endswith("self_attn.k_proj.weight"):
                w = permute_for_llama_cpp(w, cfg.num_key_value_heads)
            writer.add_tensor(gname, w.astype(np.float16 if w.ndim == 2 else np.float32))
    return out


def lora_tensors(peft_model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{GGUF weight name: (A, B)}`` for every LoRA pair of a PEFT model, in llama.cpp's layout.

    A is ``r × d_in`` and B is ``d_out × r`` (PEFT's ``lora_A`` / ``lora_B`` weights); the rows of
    B for ``q_proj`` and ``k_proj`` are permuted like the matrices they modify (llama.cpp stores
    those with the rotary dimensions interleaved, see :func:`permute_for_llama_cpp`).
    """
    modules = [(name, m) for name, m in peft_model.named_modules()
               if "default" in (getattr(m, "lora_A", None) or {})]
    if not modules:
        raise ExportError("El modelo no tiene capas LoRA: pasa el modelo de PEFT sin fusionar "
                          "(el que devuelve el entrenamiento), no el fusionado.")
    cfg = peft_model.get_base_model().config
    heads = {"self_attn.q_proj": cfg.num_attention_heads,
             "self_attn.k_proj": cfg.num_key_value_heads}
    pairs = {}
    for name, module in modules:
        lora_a = module.lora_A
        hf = name.split("base_model.model.", 1)[-1] + ".weight"
        a = lora_a["default"].weight.detach().float().cpu().numpy()
        b = module.lora_B["default"].weight.detach().float().cpu().numpy()
        for suffix, n_head in heads.items():
            if hf.endswith(suffix + ".weight"):
                b = permute_for_llama_cpp(b, n_head)
        pairs[gguf_name(hf)] = (a, b)
    return pairs


def export_lora_adapter(peft_model, template: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the LoRA of ``peft_model`` (not merged) as a GGUF adapter for ``Llama(lora_path=...)``.

    The format of llama.cpp's ``convert_lora_to_gguf.py``: ``general.type = adapter``,
    ``adapter.type = lora``, ``adapter.lora.alpha``, and for each adapted matrix ``W`` two F32
    tensors ``<W>.lora_a`` (r × d_in) and ``<W>.lora_b`` (d_out × r). llama.cpp adds
    ``(alpha / r) · B · A`` to ``W`` on the fly; the base file stays as it is. ``template`` is the
    base model's GGUF (its architecture is checked against the adapter's matrices).
    """
    import gguf

    from .memory_guard import read_gguf_header

    header = read_gguf_header(validate_gguf(template))
    pairs = lora_tensors(peft_model)
    unknown = [n for n in pairs if n not in header.tensors]
    if unknown:
        raise ExportError(f"El adaptador modifica tensores que la plantilla no tiene ({unknown[:3]}): "
                          "usa como plantilla el GGUF del modelo base que entrenaste.")
    lora_cfg = peft_model.peft_config["default"]
    out = Path(out)
    with atomic_gguf_writer(out, header.arch) as writer:
        writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(lora_cfg.lora_alpha))
        for name, (a, b) in pairs.items():
            writer.add_tensor(name + ".lora_a", a.astype(np.float32))
            writer.add_tensor(name + ".lora_b", b.astype(np.float32))
    return out


def compare_with_llama_cpp(model, gguf_path: str | os.PathLike, prompts: list[str],
                           lora_path: str | os.PathLike | None = None) -> dict:
    """Feed the same token ids to the torch model and to llama.cpp; compare last-token logits.

    Returns the largest absolute logit difference, the largest difference relative to the logit
    range, how many prompts agree on the most probable next token, and the longest prompt in
    tokens (long prompts check the RoPE scaling: with the wrong one, distant positions disagree).
    llama.cpp computes the output head only for the last position of each prompt (no
    ``logits_all``: on a long prompt with Llama 3's 128 256-token vocabulary, keeping every
    position's logits would cost hundreds of MB and as many needless head products); they are read
    with ``llama_get_logits_ith(ctx, -1)`` (:func:`course_utils.evaluation.last_logits`).
    With ``lora_path``, llama.cpp applies that GGUF LoRA adapter to ``gguf_path`` (the base)
    and ``model`` carries the same LoRA: the PEFT model, or the model merged from it (chapter 06
    compares the adapter applied on the fly with the merged weights).
    """
    import torch

    from .evaluation import last_logits
    from .models import load_llm

    probe = load_llm(str(gguf_path), n_ctx=256)
    ids_list = [probe.tokenize(p.encode("utf-8"), add_bos=True, special=True) for p in prompts]
    probe.close()
    longest = max(len(ids) for ids in ids_list)
    extra = {"lora_path": str(lora_path)} if lora_path else {}
    llm = load_llm(str(gguf_path), n_ctx=longest + 1, **extra)
    device = next(model.parameters()).device  # cuda when it was trained on a GPU
    max_abs, max_rel, agree = 0.0, 0.0, 0
    try:
        for ids in ids_list:
            llm.reset()
            llm.eval(ids)
            ours = last_logits(llm).astype(np.float32)
            with torch.no_grad():
                logits = model(torch.tensor([ids], device=device), logits_to_keep=1).logits
            theirs = logits[0, -1].float().cpu().numpy()
            diff = np.abs(ours - theirs).max()
            max_abs = max(max_abs, float(diff))
            max_rel = max(max_rel, float(diff / (theirs.max() - theirs.min())))
            agree += int(ours.argmax() == theirs.argmax())
    finally:
        llm.close()
    return {"max_abs_diff": max_abs, "max_rel_diff": max_rel, "top1_agree": agree,
            "prompts": len(prompts), "longest_tokens": longest}
