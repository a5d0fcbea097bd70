"""The model ladder's decisions on simulated machines, and clear errors for bad input."""

import shutil

import pytest

import course_utils as cu
from course_utils import catalog, models
from course_utils.errors import (
    DownloadNotAllowedError,
    ModelLoadError,
    ModelNotFoundError,
    NotAModelFileError,
    UnknownModelError,
)

from .conftest import COLAB_T4, CPU_8GB, OFFLINE_LAPTOP, TINY_ONLINE, APPLE_M2


def test_default_is_bundled_and_offline(no_network, clean_env):
    choice = cu.choose_model(hw=CPU_8GB)
    assert choice.origin == "incluido"
    assert choice.spec is catalog.SMOLLM2_135M
    assert choice.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert choice.n_gpu_layers == 0
    assert "COURSE_ALLOW_DOWNLOAD" in choice.reason  # says how to get a real Llama 3
    assert choice.size_bytes == choice.path.stat().st_size


def test_default_ignores_the_network_even_when_online(no_network, clean_env):
    assert cu.choose_model(hw=COLAB_T4).origin == "incluido"


def test_opt_in_on_cpu_8gb_picks_the_largest_llama_that_fits(clean_env):
    choice = cu.choose_model(hw=CPU_8GB, allow_download=True)
    assert choice.origin == "hub"
    assert choice.spec is catalog.LLAMA_32_3B  # 8B needs ~6.5 GiB, only 6 are free
    assert choice.n_gpu_layers == 0
    assert "RAM disponible" in choice.reason


def test_opt_in_on_colab_t4_puts_llama_8b_on_the_gpu(clean_env, gpu_build):
    choice = cu.choose_model(hw=COLAB_T4, allow_download=True)
    assert choice.spec is catalog.LLAMA_31_8B
    assert choice.n_gpu_layers == -1
    assert choice.chat_format == "llama-3"
    assert "VRAM" in choice.reason


def test_gpu_without_gpu_build_is_flagged(clean_env, monkeypatch):
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    choice = cu.choose_model(hw=COLAB_T4, allow_download=True)
    assert choice.n_gpu_layers == 0
    # without offload the model goes to RAM: 11 GiB free -> 8B still fits there
    assert choice.spec is catalog.LLAMA_31_8B


def test_gpu_without_gpu_build_warns_for_the_default(clean_env, monkeypatch):
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    choice = cu.choose_model(catalog.SMOLLM2_135M.key, hw=COLAB_T4)
    assert any("solo para CPU" in w for w in choice.warnings)


def test_opt_in_on_apple_metal_offloads(clean_env, gpu_build):
    choice = cu.choose_model(hw=APPLE_M2, allow_download=True)
    assert choice.n_gpu_layers == -1 and choice.spec is catalog.LLAMA_31_8B


def test_opt_in_offline_falls_back_to_bundled(no_network, clean_env):
    choice = cu.choose_model(hw=OFFLINE_LAPTOP, allow_download=True)
    assert choice.origin == "incluido"
    assert "no hay conexión" in choice.reason


def test_opt_in_with_offline_variable_never_probes(no_network, clean_env, monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    choice = cu.choose_model(hw=CPU_8GB.with_changes(online=None), allow_download=True)
    assert choice.origin == "incluido"


def test_opt_in_on_a_tiny_machine_keeps_bundled(clean_env):
    choice = cu.choose_model(hw=TINY_ONLINE, allow_download=True)
    assert choice.origin == "incluido"
    assert "ni el más pequeño" in choice.reason


def test_opt_in_through_environment_variable(clean_env, monkeypatch):
    monkeypatch.setenv("COURSE_ALLOW_DOWNLOAD", "1")
    assert cu.choose_model(hw=CPU_8GB).origin == "hub"


def test_env_override_with_a_path(no_network, clean_env, monkeypatch, tmp_path):
    copy = tmp_path / "mi-modelo.gguf"
    shutil.copy(cu.bundled_model_path(), copy)
    monkeypatch.setenv("COURSE_MODEL", str(copy))
    choice = cu.choose_model(hw=CPU_8GB, allow_download=True)  # the override wins over the Hub
    assert choice.origin == "COURSE_MODEL"
    assert choice.path == copy.resolve()
    assert choice.spec is None and choice.chat_format is None  # template read from the GGUF


def test_argument_beats_env(no_network, clean_env, monkeypatch):
    monkeypatch.setenv("COURSE_MODEL", "/no/existe.gguf")
    choice = cu.choose_model("smollm2-135m-instruct", hw=CPU_8GB)
    assert choice.origin == "argumento"


def test_env_override_with_a_catalogue_name(no_network, clean_env, monkeypatch):
    monkeypatch.setenv("COURSE_MODEL", "Llama-3.2-1B-Instruct")
    choice = cu.choose_model(hw=CPU_8GB)
    assert choice.spec is catalog.LLAMA_32_1B and choice.origin == "COURSE_MODEL"


def test_hub_name_while_offline_is_a_clear_error(no_network, clean_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_spec_path", lambda spec: None)  # not in the local HF cache
    with pytest.raises(DownloadNotAllowedError, match="sin conexión"):
        cu.choose_model("llama-3.1-8b-instruct", hw=CPU_8GB)


def test_too_big_model_is_flagged(no_network, clean_env):
    choice = cu.choose_model("llama-3.1-8b-instruct", hw=TINY_ONLINE)
    assert any("RAM" in w for w in choice.warnings)


# --------------------------------------------------------------------------- bad input


def test_missing_file_is_file_not_found_in_spanish(clean_env):
    with pytest.raises(ModelNotFoundError, match="No encuentro el modelo") as info:
        cu.load_llm("modelos/no-existe.gguf")
    assert isinstance(info.value, FileNotFoundError)


def test_directory_is_not_a_model(tmp_path, clean_env):
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    with pytest.raises(NotAModelFileError, match="es una carpeta") as info:
        cu.load_llm(str(tmp_path))
    assert "a.gguf" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not a gguf at all", b"\x89PNG\r\n\x1a\n" + b"0" * 100])
def test_corrupt_file_is_not_a_model(tmp_path, content, clean_env):
    bad = tmp_path / "roto.gguf"
    bad.write_bytes(content)
    with pytest.raises(NotAModelFileError, match="no es un archivo GGUF válido"):
        cu.load_llm(str(bad))


def test_unsupported_gguf_version(tmp_path, clean_env):
    bad = tmp_path / "futuro.gguf"
    bad.write_bytes(b"GGUF" + (99).to_bytes(4, "little") + b"\0" * 64)
    with pytest.raises(NotAModelFileError, match="versión 99"):
        cu.validate_gguf(bad)


def test_truncated_gguf_is_a_clear_error_not_a_crash(tmp_path, clean_env):
    good = cu.bundled_model_path().read_bytes()
    bad = tmp_path / "cortado.gguf"
    bad.write_bytes(good[: len(good) // 3])
    with pytest.raises(ModelLoadError, match="no pudo cargar"):
        cu.load_llm(str(bad))


def test_unknown_model_name_lists_valid_names(clean_env):
    with pytest.raises(UnknownModelError, match="smollm2-135m-instruct"):
        cu.load_llm("llama-9")


# --------------------------------------------------------------------------- loading for real


@pytest.fixture(scope="module")
def llm():
    return cu.load_llm()


def test_load_llm_default_generates(llm, no_network):
    out = llm("La capital de Francia es", max_tokens=8, temperature=0)
    assert out["choices"][0]["text"].strip()
    assert out["usage"]["completion_tokens"] <= 8


def test_load_llm_uses_physical_cores(llm):
    from course_utils.hardware import physical_cores

    assert llm.context_params.n_threads == physical_cores()
    assert llm.context_params.n_threads_batch == physical_cores()
    assert llm.n_ctx() == models.DEFAULT_N_CTX
    assert llm.course_choice.origin == "incluido"


def test_bundled_base_model_loads_and_has_no_chat_template(no_network):
    base = cu.load_base_llm(n_ctx=256)
    assert base.metadata["general.architecture"] == "gemma3"
    assert "tokenizer.chat_template" not in base.metadata
    assert base("The capital of France is", max_tokens=4, temperature=0)["choices"][0]["text"]


def test_real_llama3_tokenizer(no_network):
    tok = cu.load_llama3_tokenizer()
    vocab = tok.get_vocab(with_added_tokens=True)
    assert tok.get_vocab_size(with_added_tokens=False) == 128000  # byte-level BPE merges
    assert sum(i < 128256 for i in vocab.values()) == 128256  # + 256 special/reserved tokens
    # The packaged file is Llama 3.2's (Vision) tokenizer: one extra token for images.
    assert {t: i for t, i in vocab.items() if i >= 128256} == {"<|image|>": 128256}
    assert tok.token_to_id("<|begin_of_text|>") == 128000
    assert tok.token_to_id("<|start_header_id|>") == 128006
    assert tok.token_to_id("<|eot_id|>") == 128009
    text = "¡Hola mundo! El año 2024 tiene 366 días 🍕"
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text


def test_choice_is_printable(clean_env):
    text = str(cu.choose_model(hw=CPU_8GB))
    assert "Por qué" in text and "SmolLM2" in text
    hub = str(cu.choose_model("llama-3.2-3b-instruct", hw=CPU_8GB))
    assert "se descargará" in hub or "Llama-3.2-3B" in hub


def test_prompt_longer_than_context_is_a_clear_error(clean_env):
    small = cu.load_llm(n_ctx=64)
    assert small.n_ctx() == 256  # padded like llama.cpp does, so buffers agree
    long_prompt = "What are some ways to improve customer retention? " * 40
    with pytest.raises(cu.ContextWindowError, match="ventana de contexto") as info:
        small(long_prompt, max_tokens=8)
    assert isinstance(info.value, ValueError)
    # between the requested 64 and the real 256 tokens: works (llama-cpp-python alone crashes)
    out = small("What are some ways to improve customer retention? " * 9, max_tokens=4)
    assert out["usage"]["prompt_tokens"] > 64


def test_load_llm_returns_a_llama(llm):
    from llama_cpp import Llama

    assert isinstance(llm, Llama)


def test_scripts_exit_without_shutdown_noise(clean_env):
    import subprocess
    import sys

    code = "import course_utils as cu; llm = cu.load_llm(); llm('Hi', max_tokens=2)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Exception ignored" not in out.stderr, out.stderr


def test_hub_choice_downloads_the_right_file_then_loads_it(clean_env, monkeypatch):
    """The download path, with the Hub replaced by a local copy of the bundled model."""
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(cu.bundled_model_path())

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(models, "_spec_path", lambda spec: None)  # not cached yet
    choice = cu.choose_model(hw=CPU_8GB, allow_download=True)
    assert choice.needs_download
    llm = models.load_choice(choice, n_ctx=256, chat_format=None)
    assert calls == [(catalog.LLAMA_32_3B.repo_id, catalog.LLAMA_32_3B.filename)]
    assert llm.course_choice is choice


def test_failed_download_is_a_clear_error(clean_env, monkeypatch):
    import huggingface_hub

    def boom(**kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)
    monkeypatch.setattr(models, "_spec_path", lambda spec: None)
    choice = cu.choose_model("llama-3.2-1b-instruct", hw=CPU_8GB)
    with pytest.raises(DownloadNotAllowedError, match="No pude descargar"):
        models.load_choice(choice)


def test_loading_the_base_model_prints_nothing(clean_env):
    import subprocess
    import sys

    code = "import course_utils as cu; cu.load_base_llm(n_ctx=256)('Hi', max_tokens=2)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr
