"""Shared helpers of the course «Working with Llama 3».

The notebooks import this package as ``import course_utils as cu``. ``compression`` (torch) is
not imported here, so that ``import course_utils`` stays fast: ``from course_utils import
compression``.
"""

from . import (
    batching,
    bench,
    context,
    evaluation,
    exercises,
    gating,
    finetune,
    gguf_export,
    harness,
    lora_lab,
    memory,
    metrics,
    perf,
    presets,
    prompts,
    quantization,
    sampling,
    server,
    sft_data,
    standin,
    tokens,
)
from .display import wrap
from .catalog import MODELS, ModelSpec
from .errors import (
    ContextWindowError,
    CourseError,
    DownloadNotAllowedError,
    ModelLoadError,
    ModelNotFoundError,
    NotAModelFileError,
    UnknownModelError,
)
from .hardware import GpuInfo, HardwareInfo, detect_hardware
from .models import (
    ModelChoice,
    base_model_path,
    bundled_model_path,
    choose_model,
    describe_setup,
    llama3_tokenizer_path,
    load_base_llm,
    load_llama3_tokenizer,
    load_llm,
    validate_gguf,
)

__version__ = "0.1.0"
