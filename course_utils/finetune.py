"""LoRA fine-tuning with one API and two backends, chosen by hardware.

* ``"peft"``: PEFT + TRL on CPU (or a GPU without Unsloth), for the bundled model loaded from its
  GGUF into torch (float32). This is the offline path every learner can run.
* ``"unsloth"``: Unsloth on CUDA, optionally 4-bit QLoRA, for real Llama 3.x models from the Hub
  (Colab). Unsloth is never installed by ``requirements.txt``.

Also here: the numbers that decide *which* kind of fine-tuning fits (trainable parameters and
memory of full fine-tuning, LoRA and QLoRA).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .architecture import ArchSpec
from .errors import CourseError
from .hardware import HardwareInfo, detect_hardware

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: The file in which chapter 06 keeps the fine-tune (Q8_0) of the *bundled* model, so that chapter
#: 08 can evaluate it. A fine-tune of another base model gets its own name
#: (:func:`finetuned_file_name`): one model's fine-tune never overwrites another's.
FINETUNED_FILE = "smollm2-135m-sentimiento-lora.Q8_0.gguf"
FINETUNED_SUFFIX = "-sentimiento-lora.Q8_0.gguf"


def course_cache_dir() -> Path:
    """The course's own cache folder: ``$COURSE_CACHE`` or ``~/.cache/curso-llama3``."""
    return Path(os.environ.get("COURSE_CACHE") or Path.home() / ".cache" / "curso-llama3")


def _base_path(base) -> Path | None:
    """The GGUF path of ``base``: a path, a ``ModelChoice`` or a loaded model (``course_choice``)."""
    base = getattr(base, "course_choice", base)
    path = getattr(base, "path", base)
    return None if path is None else Path(path).expanduser().resolve()


def finetuned_file_name(base) -> str:
    """File name of the fine-tune of ``base`` (a GGUF path, a ``ModelChoice`` or a loaded model).

    The bundled model keeps :data:`FINETUNED_FILE`; any other base gets its file name plus a short
    hash of its full path and size, so two models never share (and overwrite) one fine-tune.
    """
    from .gating import is_bundled
    from .models import bundled_model_path

    path = _base_path(base)
    if path is None:
        raise FineTuneError("Ese modelo aún no está descargado: no tiene ajuste fino guardado.")
    if is_bundled(base) or path == bundled_model_path():
        return FINETUNED_FILE
    size = path.stat().st_size if path.exists() else 0
    digest = hashlib.sha256(f"{path}|{size}".encode()).hexdigest()[:8]
    slug = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")[:48] or "modelo"
    return f"{slug}-{digest}{FINETUNED_SUFFIX}"


def finetuned_model_path(base=None) -> Path:
    """Path of chapter 06's fine-tune of ``base`` (it may not exist yet: run chapter 06 first).

    Without ``base``: the fine-tune of the model chapter 06 trains now, i.e. the one
    :func:`choose_training_model` picks for the model ladder's choice on this machine (the
    bundled model by default; your ``COURSE_MODEL`` when chapter 06 can train it here).
    """
    if base is None:
        from .models import choose_model

        hw = detect_hardware()
        base, _ = choose_training_model(choose_model(hw=hw), hw)
    return course_cache_dir() / finetuned_file_name(base)


def finetuned_metrics_path(base=None) -> Path:
    """The JSON beside :func:`finetuned_model_path`: what chapter 06 measured on the F16 of the
    fine-tune it saved (its accuracy on the test reviews), so that chapter 08, which evaluates
    the saved Q8_0 on the same reviews, can check that quantizing kept it."""
    return finetuned_model_path(base).with_suffix(".json")


#: Unsloth's 4-bit build of the Llama 3.2 1B Instruct model, for the GPU path.
UNSLOTH_MODEL = "unsloth/Llama-3.2-1B-Instruct-bnb-4bit"


class FineTuneError(CourseError, RuntimeError):
    """A fine-tuning request that cannot run here."""


# --------------------------------------------------------------------------- the numbers


def linear_shapes(spec: ArchSpec) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of each linear layer LoRA can target, per decoder layer."""
    d, kv = spec.d_model, spec.n_kv_heads * spec.head_dim
    return {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
            "gate_proj": (d, spec.d_ff), "up_proj": (d, spec.d_ff), "down_proj": (spec.d_ff, d)}


def lora_parameters(spec: ArchSpec, r: int, targets=TARGET_MODULES, first_layer: int = 0) -> int:
    """Trainable parameters of LoRA.

    A frozen ``W`` (d_out × d_in, as torch stores it: ``y = W x``) gets ``A`` (r × d_in) and
    ``B`` (d_out × r); the layer computes ``W x + (alpha/r)·B A x``, so ``r·(d_in + d_out)``
    numbers per adapted matrix instead of ``d_in·d_out``. With ``first_layer`` only the decoder
    layers from that one up get LoRA (:attr:`LoraConfig.first_layer`).
    """
    shapes = linear_shapes(spec)
    unknown = set(targets) - set(shapes)
    if unknown:
        raise ValueError(f"Módulos desconocidos: {', '.join(sorted(unknown))}")
    if not 0 <= first_layer < spec.n_layers:
        raise ValueError(f"first_layer debe estar entre 0 y {spec.n_layers - 1}.")
    return (spec.n_layers - first_layer) * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


#: Bytes per parameter, mixed-precision training with AdamW (activations not included):
#: 16-bit weights (2) + 16-bit gradients (2) + fp32 master copy (4) + two fp32 Adam moments (8).
BYTES_TRAINED = 16
#: Bytes per frozen parameter: 16-bit, or NF4 (4 bits) plus one fp32 scale per block of 64
#: (0.5 bits more per weight; double quantization cuts that to ~0.127).
BYTES_FROZEN = {"16-bit": 2.0, "4-bit": 0.5 + 0.0625}


def embedding_parameters(spec: ArchSpec) -> int:
    """Token embeddings plus the output head (once when they are tied)."""
    return spec.vocab_size * spec.d_model * (1 if spec.tied_embeddings else 2)


def training_memory(spec: ArchSpec, method: str, r: int = 16) -> dict:
    """Rough memory (bytes) to fine-tune ``spec``: weights + gradients + optimizer states.

    ``method`` is ``"full"``, ``"lora"`` or ``"qlora"``. QLoRA (bitsandbytes) quantizes the
    linear layers of the decoder blocks to NF4; the token embeddings, the output head and the
    norms stay in 16 bits. Activations depend on batch and sequence length and are left out, so
    these are lower bounds.
    """
    n = spec.n_params
    if method == "full":
        trainable, frozen_bytes = n, 0.0
    elif method == "lora":
        trainable = lora_parameters(spec, r)
        frozen_bytes = n * BYTES_FROZEN["16-bit"]
    elif method == "qlora":
        trainable = lora_parameters(spec, r)
        kept = embedding_parameters(spec) + spec.d_model * (2 * spec.n_layers + 1)  # + norms
        frozen_bytes = (n - kept) * BYTES_FROZEN["4-bit"] + kept * BYTES_FROZEN["16-bit"]
    else:
        raise ValueError("method debe ser 'full', 'lora' o 'qlora'.")
    return {"method": method, "r": r if method != "full" else None, "trainable": trainable,
            "trainable_share": trainable / n, "bytes": frozen_bytes + trainable * BYTES_TRAINED}


# --------------------------------------------------------------------------- backend choice


def unsloth_available() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def choose_backend(hw: HardwareInfo | None = None, prefer: str | None = None,
                   unsloth_installed: bool | None = None) -> str:
    """``"unsloth"`` on a CUDA GPU with Unsloth installed, otherwise ``"peft"``.

    ``prefer`` forces one; asking for ``"unsloth"`` where it cannot run is a clear error.
    """
    hw = detect_hardware() if hw is None else hw
    installed = unsloth_available() if unsloth_installed is None else unsloth_installed
    if prefer not in (None, "peft", "unsloth"):
        raise FineTuneError(f"Backend desconocido {prefer!r}: usa 'peft' o 'unsloth'.")
    if prefer == "unsloth" or (prefer is None and hw.gpu is not None and installed):
        if hw.gpu is None:
            raise FineTuneError("Unsloth necesita una GPU NVIDIA (CUDA). En CPU usa backend='peft'.")
        if not installed:
            raise FineTuneError("Unsloth no está instalado: en Colab con GPU lo instala la celda "
                                "de instalación del capítulo 6; en tu equipo con CUDA, "
                                "pip install -r requirements-gpu.txt.")
        return "unsloth"
    return "peft"


# --------------------------------------------------------------------------- which model to train

#: On a CPU, chapter 06 trains your model only up to this size: the bundled SmolLM2 (135 M
#: parameters) takes 2–4½ minutes there; Llama 3.2 1B (1.24 B) would take about ten times longer.
CPU_MAX_TRAIN_PARAMS = 200_000_000
#: Training in float32 on a GPU: weights, LoRA's optimizer states and activations (batch 4 × 96).
GPU_TRAIN_FACTOR = 1.5


def _bundled_choice(hw: HardwareInfo, reason: str):
    from dataclasses import replace

    from .models import choose_model

    return replace(choose_model(hw=hw, env={}, allow_download=False), reason=reason)


def choose_training_model(choice, hw: HardwareInfo | None = None) -> tuple[object, str]:
    """Which model chapter 06 fine-tunes, and why: ``(ModelChoice, reason in Spanish)``.

    ``choice`` is the model ladder's choice (``cu.describe_setup()``). The learner's model is
    trained when it can be here: on a CUDA GPU if its float32 copy fits in RAM (to load it) and in
    the GPU (to train it); on a CPU if, in addition, it has at most
    :data:`CPU_MAX_TRAIN_PARAMS` parameters (a few minutes, like the bundled model). Otherwise
    the bundled SmolLM2 is trained and the reason says so. The returned choice is also the
    "before" model of the chapter: before and after are always the same base model.
    """
    from .gating import is_bundled
    from .memory_guard import read_gguf_header, torch_load_estimate

    hw = detect_hardware() if hw is None else hw
    if is_bundled(choice):
        return choice, ("es el modelo del curso (SmolLM2-135M, 135 M de parámetros): en CPU se "
                        "entrena en unos minutos.")
    name = choice.name
    fallback = "entreno el modelo incluido, SmolLM2-135M, y lo comparo consigo mismo antes y después"
    if choice.path is None:
        reason = f"{name} aún no está descargado (load_llm() lo descarga): {fallback}."
        return _bundled_choice(hw, reason), reason
    header = read_gguf_header(choice.path)
    if header.arch != "llama":
        reason = (f"{name} tiene arquitectura {header.arch!r} y la exportación a GGUF de este "
                  f"capítulo solo sabe escribir 'llama': {fallback}.")
        return _bundled_choice(hw, reason), reason
    n = header.n_params
    ram = torch_load_estimate(choice.path, hw)
    if not ram.fits:
        reason = (f"{name} no cabe en la RAM en float32: necesita ~{ram.need / 2**30:.1f} GiB y "
                  f"hay {ram.have / 2**30:.1f} GiB disponibles. Así que {fallback}. Para ajustar "
                  "tu modelo, usa una GPU con Unsloth en 4 bits (sección 8).")
        return _bundled_choice(hw, reason), reason
    if hw.gpu is not None:
        need = int(n * 4 * GPU_TRAIN_FACTOR)
        if need > hw.model_memory:
            reason = (f"{name} ({n / 1e6:,.0f} M de parámetros) necesita ~{need / 2**30:.1f} GiB "
                      f"de GPU para entrenar en float32 y hay {hw.model_memory / 2**30:.1f}: "
                      f"{fallback}. Para tu modelo, Unsloth en 4 bits (sección 8).")
            return _bundled_choice(hw, reason), reason
        return choice, (f"hay GPU ({hw.gpu.name}): entreno tu modelo, {name} "
                        f"({n / 1e6:,.0f} M de parámetros).")
    if n > CPU_MAX_TRAIN_PARAMS:
        reason = (f"{name} tiene {n / 1e6:,.0f} M de parámetros, unas {n / 135e6:.0f} veces los "
                  "135 M del modelo incluido: en CPU el entrenamiento tardaría unas "
                  f"{n / 135e6:.0f} veces lo que tarda el incluido (de 2 a 4½ minutos con 2 "
                  f"núcleos). Así que {fallback}. Con GPU (Colab), este capítulo entrena tu modelo.")
        return _bundled_choice(hw, reason), reason
    return choice, (f"{name} es pequeño ({n / 1e6:,.1f} M de parámetros, como mucho "
                    f"{CPU_MAX_TRAIN_PARAMS / 1e6:.0f} M para la CPU): entreno tu modelo.")


# --------------------------------------------------------------------------- training


@dataclass
class LoraConfig:
    """The hyper-parameters of a run (defaults: a few minutes on 2 CPU cores)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    targets: tuple[str, ...] = TARGET_MODULES
    learning_rate: float = 1e-3
    epochs: float = 1.0
    batch_size: int = 4  #: small batches = more updates; with ~250 examples that matters
    max_length: int = 96
    seed: int = 0
    system: str | None = None  #: optional system message in every training conversation
    max_grad_norm: float = 1.0  #: gradient clipping, as transformers' Trainer does by default
    #: LoRA only on the decoder layers from this one up (PEFT's ``layers_to_transform``); 0 = all.
    #: The layers below have no trainable parameters, so the backward pass stops above them.
    first_layer: int = 0


@dataclass
class TrainResult:
    losses: list[tuple[int, float]] = field(default_factory=list)  #: (step, training loss)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_gb: float = 0.0
    trainable: int = 0
    total: int = 0
    tokens_per_second: float = 0.0


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


#: Llama 3's "llama3" RoPE scaling in the published models, as (factor, low_freq_factor,
#: high_freq_factor, original_max_position_embeddings). llama.cpp's converter stores the
#: resulting per-frequency divisors in ``rope_freqs.weight``; these settings are recovered from it.
LLAMA3_ROPE_SETTINGS = {
    "Llama 3.1": (8.0, 1.0, 4.0, 8192),
    "Llama 3.2 / 3.3": (32.0, 1.0, 4.0, 8192),
}


def rope_parameters_from_gguf(header) -> dict:
    """The ``rope_parameters`` of a transformers config for a GGUF (``memory_guard.GGUFHeader``).

    Without ``rope_freqs.weight``: plain RoPE with the file's θ. With it: Llama 3's "llama3"
    scaling, whose settings are found by recomputing the tensor for each known release
    (:data:`LLAMA3_ROPE_SETTINGS`); factors that match none raise :class:`FineTuneError`.
    """
    from .standin import llama3_rope_factors

    theta = float(header.arch_get("rope.freq_base", 10000.0))
    if "rope_freqs.weight" not in header.tensors:
        return {"rope_type": "default", "rope_theta": theta}
    stored = np.asarray(header.tensor_data("rope_freqs.weight"), dtype=np.float32).reshape(-1)
    n_head = int(header.arch_get("attention.head_count"))
    head_dim = int(header.arch_get("rope.dimension_count",
                                   int(header.arch_get("embedding_length")) // n_head))
    for factor, low, high, original in LLAMA3_ROPE_SETTINGS.values():
        expected = llama3_rope_factors(head_dim, theta, factor, low, high, original)
        if expected.shape == stored.shape and np.allclose(stored, expected, rtol=1e-5, atol=0):
            return {"rope_type": "llama3", "rope_theta": theta, "factor": factor,
                    "low_freq_factor": low, "high_freq_factor": high,
                    "original_max_position_embeddings": original}
    known = ", ".join(f"{k} (factor {v[0]:g})" for k, v in LLAMA3_ROPE_SETTINGS.items())
    raise FineTuneError(
        f"'{header.path.name}' trae rope_freqs.weight (escalado RoPE de Llama 3) con unos factores "
        f"que no corresponden a ningún escalado conocido ({known}; el archivo tiene de "
        f"{stored.min():g} a {stored.max():g}). Sin ellos, torch y llama.cpp no coincidirían en "
        "posiciones largas. Usa un GGUF convertido de un Llama 3.1/3.2/3.3 oficial, o añade sus "
        "valores a cu.finetune.LLAMA3_ROPE_SETTINGS."
    )


def llama_config_from_gguf(header):
    """A transformers ``LlamaConfig`` equal to the model in the GGUF: sizes, tied head, RoPE."""
    from transformers import LlamaConfig

    n_head = int(header.arch_get("attention.head_count"))
    d = int(header.arch_get("embedding_length"))
    ids = {name: header.get(f"tokenizer.ggml.{key}_token_id")
           for name, key in (("bos_token_id", "bos"), ("eos_token_id", "eos"),
                             ("pad_token_id", "padding"), ("unk_token_id", "unknown"))}
    return LlamaConfig(
        vocab_size=header.n_vocab, hidden_size=d,
        intermediate_size=int(header.arch_get("feed_forward_length")),
        num_hidden_layers=int(header.arch_get("block_count")),
        num_attention_heads=n_head,
        num_key_value_heads=int(header.arch_get("attention.head_count_kv", n_head)),
        head_dim=int(header.arch_get("attention.key_length", d // n_head)),
        max_position_embeddings=int(header.arch_get("context_length")),
        rms_norm_eps=float(header.arch_get("attention.layer_norm_rms_epsilon")),
        rope_parameters=rope_parameters_from_gguf(header),
        tie_word_embeddings=header.tied_embeddings,
        hidden_act="silu", attention_bias=False, mlp_bias=False, dtype="float32",
        **{k: v for k, v in ids.items() if v is not None},
    )


def _reverse_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary layout of attn_q / attn_k -> Hugging Face's (what transformers does)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _llama_from_gguf(path: Path):
    """``LlamaForCausalLM`` in float32 from a llama-architecture GGUF, read tensor by tensor."""
    import torch
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize
    from transformers import LlamaForCausalLM

    from .gguf_export import hf_name
    from .memory_guard import read_gguf_header

    header = read_gguf_header(path)
    config = llama_config_from_gguf(header)
    state = {}
    for name, info in header.tensors.items():
        if name == "rope_freqs.weight":  # in the config's rope_parameters (checked there)
            continue
        try:
            target = hf_name(name)
        except KeyError:
            raise FineTuneError(f"'{path.name}' trae el tensor {name!r}, que un Llama no tiene: "
                                "no sé cargar este modelo en torch.") from None
        w = dequantize(np.asarray(header.tensor_data(name)), GGMLQuantizationType(info.ggml_type))
        w = np.ascontiguousarray(w.reshape(info.shape), dtype=np.float32)
        if not w.flags.writeable:  # an F32 tensor is a view of the read-only file mapping
            w = w.copy()
        if name.endswith("attn_q.weight"):
            w = _reverse_permute(w, config.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            w = _reverse_permute(w, config.num_key_value_heads)
        state[target] = torch.from_numpy(w)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    expected = set(model.state_dict()) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise FineTuneError(f"'{path.name}' no es un Llama completo: faltan {missing[:4]}, "
                            f"sobran {extra[:4]}.")
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    # the rotary buffers were built on the meta device: build them for real
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    return model.eval()


def load_torch_model_from_gguf(path: str | Path, hw: HardwareInfo | None = None):
    """The model alone, in float32, from a GGUF file.

    First the memory guard: a model whose float32 copy does not fit in RAM raises
    :class:`~course_utils.memory_guard.InsufficientMemoryError` before anything is allocated.
    A llama-architecture file (SmolLM2, every Llama 3.x) is read with the course's GGUF reader and
    dequantized tensor by tensor with ``gguf``: the config gets the file's tied or untied output
    head and its "llama3" RoPE scaling (``rope_freqs.weight``), which transformers' own GGUF
    loader ignores. Other architectures go through ``from_pretrained(gguf_file=...)``.
    """
    from .memory_guard import check_torch_load, read_gguf_header
    from .models import validate_gguf

    path = validate_gguf(path)
    check_torch_load(path, hw)
    if read_gguf_header(path).arch == "llama":
        return _llama_from_gguf(path)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                dtype="float32")


def _llama3_tokenizer(header):
    """Llama 3's tokenizer for a "llama-bpe" GGUF: its vocabulary, merges and special tokens on the
    pre-tokenizer, decoder and post-processor of Llama 3's own ``tokenizer.json``.

    transformers' GGUF converter gets this family wrong (``"\n\n"`` becomes two tokens instead
    of one, EOS becomes ``<|begin_of_text|>``), which would train the model on other token ids
    than llama.cpp gives it.
    """
    from gguf import TokenType
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from .models import llama3_tokenizer_path

    skeleton = json.loads(llama3_tokenizer_path().read_text(encoding="utf-8"))
    tokens = header.get("tokenizer.ggml.tokens")
    types = header.get("tokenizer.ggml.token_type") or [int(TokenType.NORMAL)] * len(tokens)
    special = {int(TokenType.CONTROL), int(TokenType.USER_DEFINED)}
    skeleton["model"]["vocab"] = {t: i for i, (t, k) in enumerate(zip(tokens, types))
                                  if k not in special}
    skeleton["model"]["merges"] = list(header.get("tokenizer.ggml.merges"))
    skeleton["added_tokens"] = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": k == int(TokenType.CONTROL)}
        for i, (t, k) in enumerate(zip(tokens, types)) if k in special]
    bos_id = header.get("tokenizer.ggml.bos_token_id")
    if header.get("tokenizer.ggml.add_bos_token", True) and bos_id is not None:
        bos = tokens[bos_id]
        for proc in skeleton["post_processor"]["processors"]:
            if proc["type"] == "TemplateProcessing":
                for seq in ("single", "pair"):
                    for piece in proc[seq]:
                        if "SpecialToken" in piece:
                            piece["SpecialToken"]["id"] = bos
                proc["special_tokens"] = {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}
    else:
        skeleton["post_processor"]["processors"] = [
            p for p in skeleton["post_processor"]["processors"] if p["type"] != "TemplateProcessing"]

    def token(key: str):
        idx = header.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[idx] if idx is not None else None

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(skeleton)),
        bos_token=token("bos"), eos_token=token("eos"), pad_token=token("padding"),
        chat_template=header.get("tokenizer.chat_template"),
        model_max_length=int(header.arch_get("context_length", 131072)),
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer_from_gguf(path: str | Path):
    """The tokenizer stored in a GGUF, as a transformers tokenizer (with its chat template).

    Llama 3 files (pre-tokenizer ``llama-bpe``) are built from the file's own vocabulary on Llama
    3's ``tokenizer.json`` (see :func:`_llama3_tokenizer`); the rest (SmolLM2...) come from
    ``AutoTokenizer.from_pretrained(gguf_file=...)``.
    """
    from .memory_guard import read_gguf_header
    from .models import validate_gguf

    path = validate_gguf(path)
    header = read_gguf_header(path)
    if header.get("tokenizer.ggml.model") == "gpt2" and header.get("tokenizer.ggml.pre") == "llama-bpe":
        return _llama3_tokenizer(header)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def load_torch_from_gguf(path: str | Path, hw: HardwareInfo | None = None):
    """(model, tokenizer) in float32 from a GGUF file, after the memory guard."""
    from .memory_guard import check_torch_load
    from .models import validate_gguf

    path = validate_gguf(path)
    check_torch_load(path, hw)  # before the tokenizer, which takes time too
    return load_torch_model_from_gguf(path, hw), load_tokenizer_from_gguf(path)


def _conversations(rows: list[dict], system: str | None) -> "object":
    """Conversational prompt-completion examples: TRL computes the loss on the answer only."""
    from datasets import Dataset

    from .sft_data import to_messages

    examples = []
    for row in rows:
        messages = to_messages(row, system)["messages"]
        examples.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return Dataset.from_list(examples)


def align_special_tokens(model, tokenizer) -> None:
    """Give the model's config and generation config the tokenizer's PAD/BOS/EOS ids.

    The trainer does the same when they differ, but prints a warning in the middle of the
    training output; doing it first, explicitly, changes nothing else.
    """
    configs = [model.config]
    if getattr(model, "generation_config", None) is not None:
        configs.append(model.generation_config)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name)
        for config in configs:
            setattr(config, name, value)


@dataclass
class Example:
    """One training conversation as token ids; the loss is on ``ids[start:end]``."""

    ids: list[int]
    start: int  #: first token of the answer (the prompt is everything before)
    end: int  #: one past the end-of-turn token that closes the answer
    answer: str = ""  #: the answer's text (the label, for a classifier)


def encode_examples(tokenizer, rows: list[dict], system: str | None = None) -> list[Example]:
    """Chat-formatted examples with the model's own template: prompt, answer, end of turn.

    The answer is scored up to and including the token that closes the turn (the first special
    token after it: ``<|im_end|>`` in SmolLM2, ``<|eot_id|>`` in Llama 3), so the model learns
    to stop after the label; what the template adds after it (a newline) is not scored.
    """
    from .sft_data import to_messages

    special = set(tokenizer.added_tokens_decoder) | set(tokenizer.all_special_ids)

    def ids_of(messages, **kwargs):
        out = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    examples = []
    for row in rows:
        messages = to_messages(row, system)["messages"]
        prompt = ids_of(messages[:-1], add_generation_prompt=True)
        full = ids_of(messages)
        closing = [i for i in range(len(prompt), len(full)) if full[i] in special]
        if full[:len(prompt)] != prompt or not closing:
            raise FineTuneError("La plantilla de chat del modelo no deja el prompt como prefijo de "
                                "la conversación completa o no cierra el turno con un token "
                                "especial: no sé dónde empieza y acaba la respuesta.")
        end = closing[0] + 1
        examples.append(Example(full[:end], len(prompt), end, row["output"]))
    return examples


def _batches(examples: list[Example], batch_size: int, rng) -> list[list[Example]]:
    """Random batches with the answers mixed: each answer's examples are shuffled and dealt in
    turn (A B C A B C ...), then cut into batches. Not grouped by length: similar lengths often
    mean the same template and answer, and batches of one class make the updates swing from
    class to class (measured: the model then answers one class to everything)."""
    by_answer: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_answer.setdefault(e.answer, []).append(i)
    for group in by_answer.values():
        rng.shuffle(group)
    groups = list(by_answer.values())
    rng.shuffle(groups)
    order = [g[k] for k in range(max(map(len, groups))) for g in groups if k < len(g)]
    return [[examples[i] for i in order[k:k + batch_size]]
            for k in range(0, len(order), batch_size)]


def shared_prefix(batch: list[Example]) -> int:
    """How many leading tokens every example of ``batch`` shares and no scored position needs.

    In chapter 06 the system prompt and the instruction are the same in every example: ~50 of
    its ~76 tokens. It stops one token before the earliest answer, because the hidden state at
    ``t - 1`` is the one that predicts the answer token ``t``.
    """
    limit = min(e.start for e in batch) - 1
    first = batch[0].ids
    n = 0
    while n < limit and all(e.ids[n] == first[n] for e in batch):
        n += 1
    return n


def padded_ids(batch: list[Example], pad_id: int, skip: int = 0):
    """The examples' token ids from position ``skip`` on, padded on the right with ``pad_id``."""
    import torch

    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width - skip), pad_id, dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, :len(e.ids) - skip] = torch.tensor(e.ids[skip:])
    return ids


def scored_positions(batch: list[Example], offset: int = 0):
    """``(rows, cols, targets)`` tensors: for every answer token ``t`` of example ``i``, the
    position ``t - 1`` (minus ``offset``, the tokens not in the tensor) whose hidden state
    predicts it, and the token itself."""
    import torch

    rows, cols, targets = [], [], []
    for i, e in enumerate(batch):
        for t in range(e.start, e.end):  # the hidden state at t-1 predicts token t
            rows.append(i)
            cols.append(t - 1 - offset)
            targets.append(e.ids[t])
    return torch.tensor(rows), torch.tensor(cols), torch.tensor(targets)


def answer_loss(peft_model, batch: list[Example], pad_id: int, share_prefix: bool = True):
    """Mean cross-entropy over the answer tokens of ``batch``.

    Two savings, neither of which changes the result (tests compare loss and gradients):

    * the output head (hidden size × vocabulary: 576 × 49 152 in SmolLM2, 4 096 × 128 256 in
      Llama 3 8B) only where a token is scored: a few positions per example instead of all of
      them (``SFTTrainer`` computes the logits everywhere and discards most);
    * with ``share_prefix``, the tokens every example starts with (:func:`shared_prefix`: the
      system prompt and the instruction) go through the decoder **once** per batch; their keys
      and values are repeated for each example (``DynamicCache.batch_repeat_interleave``) and the
      rest of each example continues from them. The gradient still flows through that shared
      computation, so LoRA learns from the prefix exactly as before (dropout 0, as the course
      trains). With batches of 4 the decoder reads about half the tokens.

    Padding goes on the right: with causal attention no real token sees it, so no mask is needed.
    """
    import torch

    n_shared = shared_prefix(batch) if share_prefix and len(batch) > 1 else 0
    ids = padded_ids(batch, pad_id, skip=n_shared)
    rows, cols, targets = scored_positions(batch, offset=n_shared)
    causal_lm = peft_model.get_base_model()
    cache = None
    if n_shared:
        from transformers import DynamicCache

        cache = DynamicCache(config=causal_lm.config)
        causal_lm.model(input_ids=torch.tensor([batch[0].ids[:n_shared]]),
                        past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(len(batch))
    hidden = causal_lm.model(input_ids=ids, past_key_values=cache,
                             use_cache=cache is not None).last_hidden_state
    logits = causal_lm.lm_head(hidden[rows, cols])
    return torch.nn.functional.cross_entropy(logits.float(), targets)


def label_logprobs_torch(model, tokenizer, row: dict, labels: list[str],
                         system: str | None = None) -> dict[str, float]:
    """``log P(label | chat prompt)`` for each label, read in torch from ``model``.

    The quantity :func:`course_utils.evaluation.label_logprobs` reads with llama.cpp from a GGUF,
    here on the training model itself (a PEFT model or a plain ``transformers`` one, on the
    device of its weights: the CPU, or the GPU in Colab): the sum of the log-probabilities of
    the label's tokens, not of the token that closes the turn.
    """
    import torch

    device = model.get_input_embeddings().weight.device
    out = {}
    for label, e in zip(labels, encode_examples(
            tokenizer, [{**row, "output": label} for label in labels], system)):
        ids = torch.tensor([e.ids[:e.end - 1]], device=device)
        logits = model(input_ids=ids).logits[0]
        if logits.shape[0] != ids.shape[1]:  # Unsloth cuts inputs at its max_seq_length
            raise FineTuneError(
                f"El modelo devolvió {logits.shape[0]} posiciones para {ids.shape[1]} tokens: "
                "cortó la entrada. Cárgalo con una longitud máxima mayor "
                "(LoraConfig.max_length).")
        logp = torch.log_softmax(logits.float(), -1)
        out[label] = sum(logp[t - 1, e.ids[t]].item() for t in range(e.start, e.end - 1))
    return out


def most_likely_labels(model, tokenizer, rows: list[dict], labels: list[str],
                       system: str | None = None, progress: bool = False,
                       desc: str = "etiqueta más probable") -> list[str]:
    """For each row, the label with the highest :func:`label_logprobs_torch`.

    The model is put in evaluation mode while it scores (no dropout) and left as it was.
    """
    import torch

    rows_ = rows
    if progress:
        from tqdm.auto import tqdm

        rows_ = tqdm(rows, desc=desc, leave=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            preds = []
            for row in rows_:
                scores = label_logprobs_torch(model, tokenizer, row, labels, system)
                preds.append(max(labels, key=scores.__getitem__))
    finally:
        model.train(was_training)
    return preds


def _add_lora(model, tokenizer, config: LoraConfig) -> tuple[object, TrainResult]:
    """Seed, PAD/BOS/EOS aligned, LoRA added by PEFT; a :class:`TrainResult` with the counts."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    torch.manual_seed(config.seed)
    if tokenizer.pad_token is None:  # what SFTTrainer would do: pad with EOS
        tokenizer.pad_token = tokenizer.eos_token
    align_special_tokens(model, tokenizer)
    n_layers = model.config.num_hidden_layers
    if not 0 <= config.first_layer < n_layers:
        raise FineTuneError(f"first_layer={config.first_layer}: el modelo tiene {n_layers} capas "
                            f"(0 a {n_layers - 1}); usa 0 para ponerle LoRA a todas.")
    layers = list(range(config.first_layer, n_layers)) if config.first_layer else None
    peft_model = get_peft_model(model, PeftLoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=list(config.targets), layers_to_transform=layers, bias="none",
        task_type="CAUSAL_LM"))
    result = TrainResult()
    result.trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    result.total = sum(p.numel() for p in peft_model.parameters())
    return peft_model, result


def train_lora_peft(model, tokenizer, train_rows: list[dict], eval_rows: list[dict] | None,
                    config: LoraConfig, output_dir: str | Path) -> tuple[object, TrainResult]:
    """LoRA with PEFT + TRL's SFTTrainer (loss only on the assistant's answer)."""
    import torch
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    peft_model, result = _add_lora(model, tokenizer, config)

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                result.losses.append((state.global_step, float(logs["loss"])))
            if logs and "eval_loss" in logs:
                result.eval_losses.append((state.global_step, float(logs["eval_loss"])))

    args = SFTConfig(
        output_dir=str(output_dir), num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate, lr_scheduler_type="linear", warmup_steps=0.05,
        logging_steps=2, eval_strategy="epoch" if eval_rows else "no", save_strategy="no",
        max_length=config.max_length,
        bf16=False, fp16=False, use_cpu=not torch.cuda.is_available(), seed=config.seed,
        report_to=[], disable_tqdm=False, dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=peft_model, args=args, processing_class=tokenizer,
        train_dataset=_conversations(train_rows, config.system),
        eval_dataset=_conversations(eval_rows, config.system) if eval_rows else None,
        callbacks=[Record()],
    )
    start = time.perf_counter()
    stats = trainer.train()
    result.seconds = time.perf_counter() - start
    result.peak_rss_gb = peak_rss_gb()
    n_tokens = sum(len(x) for x in trainer.train_dataset["input_ids"]) * config.epochs
    result.tokens_per_second = n_tokens / result.seconds
    del stats
    return peft_model, result


def train_lora_loop(model, tokenizer, train_rows: list[dict], eval_rows: list[dict] | None,
                    config: LoraConfig, progress: bool = True,
                    eval_every: int | None = None) -> tuple[object, TrainResult]:
    """LoRA with PEFT and a short training loop of our own: loss only on the answer.

    What ``SFTTrainer`` does for prompt → completion data, without its useless work on a CPU:
    the output head only where the loss is (:func:`answer_loss`), no gradient checkpointing,
    gradient clipping at 1 like the ``Trainer``, AdamW with linear warm-up and decay.
    Every ``eval_every`` steps (default: halfway and at the end) the validation loss is computed,
    with the same function and no gradients.

    Measured on chapter 06's data (SmolLM2-135M, 2 CPU cores, 1 epoch of 240 examples, idle
    machine): ~170 tokens/s against 78 for :func:`train_lora_peft` (TRL's ``SFTTrainer``, which
    computes the output head at every position). Batches mix the classes (:func:`_batches`).
    """
    import random

    import torch
    from .hardware import physical_cores

    torch.set_num_threads(physical_cores())
    peft_model, result = _add_lora(model, tokenizer, config)

    train = encode_examples(tokenizer, train_rows, config.system)
    val = encode_examples(tokenizer, eval_rows, config.system) if eval_rows else []
    rng = random.Random(config.seed)
    per_epoch = -(-len(train) // config.batch_size)
    total = max(1, round(per_epoch * config.epochs))
    warmup = max(1, round(0.05 * total))
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, (total - step) / max(1, total - warmup)))
    eval_every = eval_every or max(1, total // 2)
    pad_id = tokenizer.pad_token_id

    def val_loss() -> float:
        peft_model.eval()
        with torch.no_grad():
            losses = [answer_loss(peft_model, b, pad_id).item() * len(b)
                      for b in _batches(val, 2 * config.batch_size, random.Random(0))]
        peft_model.train()
        return sum(losses) / len(val)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="entrenando", leave=False)
    peft_model.train()
    step, n_tokens, start = 0, 0, time.perf_counter()
    while step < total:
        for batch in _batches(train, config.batch_size, rng):
            if step == total:
                break
            loss = answer_loss(peft_model, batch, pad_id)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            n_tokens += sum(len(e.ids) for e in batch)
            if step % 2 == 0 or step == 1:
                result.losses.append((step, loss.item()))
            if val and (step % eval_every == 0 or step == total):
                result.eval_losses.append((step, val_loss()))
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    peft_model.eval()
    result.seconds = time.perf_counter() - start
    result.peak_rss_gb = peak_rss_gb()
    result.tokens_per_second = n_tokens / result.seconds
    return peft_model, result


def mixed_precision(hw_or_capability, bf16_supported: bool | None = None) -> dict[str, bool]:
    """``{"bf16": ..., "fp16": ...}``: the mixed precision a CUDA GPU can train in.

    ``hw_or_capability`` is a :class:`HardwareInfo`, a :class:`~course_utils.hardware.GpuInfo`, a
    CUDA compute capability ``(major, minor)``, or ``None`` (no CUDA GPU). bfloat16 only with
    native support (compute capability >= 8.0: A100, L4, H100...); an older GPU such as the T4
    (7.5) gets float16, although ``torch.cuda.is_bf16_supported()`` says True there (it counts
    emulated bfloat16), because that is what Unsloth loads the model in. A GPU of unknown
    capability gets float16 too (every CUDA GPU has it). Without a CUDA GPU, neither: float32.
    ``bf16_supported=False`` (e.g. ``unsloth.is_bfloat16_supported()``) vetoes bfloat16.
    """
    capability = hw_or_capability
    if isinstance(capability, HardwareInfo):
        capability = capability.gpu
    if capability is None:
        return {"bf16": False, "fp16": False}
    if not isinstance(capability, tuple):  # a GpuInfo
        capability = capability.compute_capability
    bf16 = capability is not None and tuple(capability) >= (8, 0) and bf16_supported is not False
    return {"bf16": bf16, "fp16": not bf16}


def train_lora_unsloth(train_rows: list[dict], config: LoraConfig, output_dir: str | Path,
                       model_name: str = UNSLOTH_MODEL, load_in_4bit: bool = True):
    """The course notes' Unsloth script, with today's APIs (GPU only; runs on Colab).

    Returns ``(model, tokenizer, TrainResult)``; the model is a PEFT model ready to merge.
    """
    from unsloth import FastLanguageModel, is_bfloat16_supported  # noqa: I001  (unsloth first)
    import torch
    from trl import SFTConfig, SFTTrainer

    # One decision for the model's dtype and the trainer's flags, so they cannot disagree (on a
    # T4, bf16=torch.cuda.is_bf16_supported() meets a float16 model and Unsloth stops).
    precision = mixed_precision(detect_hardware(), bf16_supported=is_bfloat16_supported())
    dtype = torch.bfloat16 if precision["bf16"] else torch.float16 if precision["fp16"] else None
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_name, max_seq_length=config.max_length, load_in_4bit=load_in_4bit,
        dtype=dtype)
    longest = max(len(e.ids) for e in encode_examples(tokenizer, train_rows, config.system))
    if longest > config.max_length:  # TRL would cut them and drop those left without an answer
        raise FineTuneError(
            f"El ejemplo más largo ocupa {longest} tokens con la plantilla de chat del modelo y "
            f"max_length={config.max_length}: se cortarían y algunos perderían la respuesta. "
            f"Sube LoraConfig.max_length a {longest} o más.")
    model = FastLanguageModel.get_peft_model(
        model, r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=list(config.targets), bias="none",
        use_gradient_checkpointing="unsloth", random_state=config.seed)
    trainer = SFTTrainer(
        model=model, processing_class=tokenizer,
        train_dataset=_conversations(train_rows, config.system),
        args=SFTConfig(
            output_dir=str(output_dir), per_device_train_batch_size=config.batch_size,
            num_train_epochs=config.epochs, learning_rate=config.learning_rate,
            max_length=config.max_length, logging_steps=2, optim="adamw_8bit",
            bf16=precision["bf16"], fp16=precision["fp16"],
            seed=config.seed, report_to=[], save_strategy="no"),
    )
    start = time.perf_counter()
    trainer.train()
    result = TrainResult(
        losses=[(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h],
        seconds=time.perf_counter() - start,
        peak_rss_gb=torch.cuda.max_memory_allocated() / 1e9)
    return model, tokenizer, result


def merge(peft_model):
    """Fold the LoRA matrices into the base weights (W + B·A·alpha/r); returns a plain model."""
    return peft_model.merge_and_unload()
