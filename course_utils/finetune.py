"""LoRA fine-tuning with one API and two backends, chosen by hardware.

* ``"peft"``: PEFT + TRL on CPU (or a GPU without Unsloth), for the bundled model loaded from its
  GGUF into torch (float32). This is the offline path every learner can run.
* ``"unsloth"``: Unsloth on CUDA, optionally 4-bit QLoRA, for real Llama 3.x models from the Hub
  (Colab). Unsloth is never installed by ``requirements.txt``.

Also here: the numbers that decide *which* kind of fine-tuning fits (trainable parameters and
memory of full fine-tuning, LoRA and QLoRA).
"""

from __future__ import annotations

import importlib.util
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .architecture import ArchSpec
from .errors import CourseError
from .hardware import HardwareInfo, detect_hardware

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Where chapter 06 keeps its fine-tuned model (Q8_0) so that chapter 07 can evaluate it.
FINETUNED_FILE = "smollm2-135m-sentimiento-lora.Q8_0.gguf"


def course_cache_dir() -> Path:
    """The course's own cache folder: ``$COURSE_CACHE`` or ``~/.cache/curso-llama3``."""
    return Path(os.environ.get("COURSE_CACHE") or Path.home() / ".cache" / "curso-llama3")


def finetuned_model_path() -> Path:
    """Path of chapter 06's fine-tuned model (it may not exist yet: run chapter 06 first)."""
    return course_cache_dir() / FINETUNED_FILE


#: Unsloth's 4-bit build of the Llama 3.2 1B Instruct model, for the GPU path.
UNSLOTH_MODEL = "unsloth/Llama-3.2-1B-Instruct-bnb-4bit"


class FineTuneError(CourseError, RuntimeError):
    """A fine-tuning request that cannot run here."""


# --------------------------------------------------------------------------- the numbers


def linear_shapes(spec: ArchSpec) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer LoRA can target, per decoder layer."""
    d, kv = spec.d_model, spec.n_kv_heads * spec.head_dim
    return {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
            "gate_proj": (d, spec.d_ff), "up_proj": (d, spec.d_ff), "down_proj": (spec.d_ff, d)}


def lora_parameters(spec: ArchSpec, r: int, targets=TARGET_MODULES) -> int:
    """Trainable parameters of LoRA: each adapted matrix W (in×out) gets A (in×r) and B (r×out)."""
    shapes = linear_shapes(spec)
    unknown = set(targets) - set(shapes)
    if unknown:
        raise ValueError(f"Módulos desconocidos: {', '.join(sorted(unknown))}")
    return spec.n_layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


#: Bytes per parameter, mixed-precision training with AdamW (activations not included):
#: 16-bit weights (2) + 16-bit gradients (2) + fp32 master copy (4) + two fp32 Adam moments (8).
BYTES_TRAINED = 16
BYTES_FROZEN = {"16-bit": 2.0, "4-bit": 0.5 + 0.0625}  # NF4 + its block scales


def training_memory(spec: ArchSpec, method: str, r: int = 16) -> dict:
    """Rough memory (bytes) to fine-tune ``spec``: weights + gradients + optimizer states.

    ``method`` is ``"full"``, ``"lora"`` or ``"qlora"``. Activations depend on batch and sequence
    length and are left out, so these are lower bounds.
    """
    n = spec.n_params
    if method == "full":
        trainable, frozen_bytes = n, 0.0
    elif method in ("lora", "qlora"):
        trainable = lora_parameters(spec, r)
        frozen_bytes = n * BYTES_FROZEN["16-bit" if method == "lora" else "4-bit"]
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


def load_torch_model_from_gguf(path: str | Path):
    """The model alone, in float32, from a GGUF file (transformers dequantizes it).

    Without the tokenizer, which takes transformers another ~10 s to rebuild from the GGUF: when
    token ids are enough, take them from ``llm.tokenize`` (same vocabulary).
    """
    from transformers import AutoModelForCausalLM

    from .models import validate_gguf

    path = validate_gguf(path)
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                dtype="float32")


def load_torch_from_gguf(path: str | Path):
    """(model, tokenizer) in float32 from a GGUF file (transformers dequantizes it)."""
    from transformers import AutoTokenizer

    from .models import validate_gguf

    path = validate_gguf(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return load_torch_model_from_gguf(path), tokenizer


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


def train_lora_peft(model, tokenizer, train_rows: list[dict], eval_rows: list[dict] | None,
                    config: LoraConfig, output_dir: str | Path) -> tuple[object, TrainResult]:
    """LoRA with PEFT + TRL's SFTTrainer (loss only on the assistant's answer)."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(config.seed)
    if tokenizer.pad_token is None:  # what SFTTrainer would do: pad with EOS
        tokenizer.pad_token = tokenizer.eos_token
    align_special_tokens(model, tokenizer)
    peft_model = get_peft_model(model, PeftLoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=list(config.targets), bias="none", task_type="CAUSAL_LM"))
    result = TrainResult()
    result.trainable, result.total = (sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
                                      sum(p.numel() for p in peft_model.parameters()))

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
