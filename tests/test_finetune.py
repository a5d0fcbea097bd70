import numpy as np
import pytest

import course_utils as cu
from course_utils import finetune as F
from course_utils import gguf_export as G
from course_utils.architecture import LLAMA_31_8B, ArchSpec

from .conftest import COLAB_T4, CPU_8GB


def test_lora_parameters_by_hand():
    smol = ArchSpec.from_gguf(cu.bundled_model_path())
    # q_proj: r*(576+576), v_proj: r*(576+192), 30 layers
    assert F.lora_parameters(smol, 8, ("q_proj", "v_proj")) == 30 * 8 * (1152 + 768)
    assert F.lora_parameters(LLAMA_31_8B, 16) == 41_943_040  # the usual "~42M" for r=16
    with pytest.raises(ValueError, match="desconocidos"):
        F.lora_parameters(smol, 8, ("q_proj", "nope"))


def test_training_memory_orders_the_methods():
    full, lora, qlora = (F.training_memory(LLAMA_31_8B, m, r=16) for m in ("full", "lora", "qlora"))
    assert full["bytes"] > 100e9 and lora["bytes"] < 20e9
    # QLoRA keeps embeddings and the untied output head (2 x 525 M) in 16 bits: ~6.7 GB, not 5.2
    assert 6.5e9 < qlora["bytes"] < 6.9e9
    assert F.embedding_parameters(LLAMA_31_8B) == 2 * 128256 * 4096
    assert lora["trainable_share"] < 0.01 and full["trainable_share"] == 1
    with pytest.raises(ValueError):
        F.training_memory(LLAMA_31_8B, "magic")


@pytest.mark.parametrize("hw, installed, prefer, expected", [
    (CPU_8GB, False, None, "peft"),
    (CPU_8GB, True, None, "peft"),        # Unsloth installed but no GPU
    (COLAB_T4, True, None, "unsloth"),
    (COLAB_T4, False, None, "peft"),      # GPU without Unsloth: PEFT on the GPU
    (COLAB_T4, True, "peft", "peft"),
])
def test_backend_choice(hw, installed, prefer, expected):
    assert F.choose_backend(hw, prefer=prefer, unsloth_installed=installed) == expected


@pytest.mark.parametrize("hw, installed, match", [
    (CPU_8GB, True, "GPU NVIDIA"), (COLAB_T4, False, "no está instalado")])
def test_unsloth_where_it_cannot_run(hw, installed, match):
    with pytest.raises(F.FineTuneError, match=match):
        F.choose_backend(hw, prefer="unsloth", unsloth_installed=installed)
    with pytest.raises(F.FineTuneError, match="desconocido"):
        F.choose_backend(hw, prefer="tensorflow", unsloth_installed=installed)


# --------------------------------------------------------------------------- GGUF export


def test_gguf_names():
    assert G.gguf_name("model.layers.3.self_attn.q_proj.weight") == "blk.3.attn_q.weight"
    assert G.gguf_name("model.layers.0.mlp.down_proj.weight") == "blk.0.ffn_down.weight"
    assert G.gguf_name("model.embed_tokens.weight") == "token_embd.weight"
    with pytest.raises(KeyError):
        G.gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq")


def test_permutation_is_the_inverse_of_transformers_gguf_loader():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(9 * 64, 576)).astype(np.float32)
    permuted = G.permute_for_llama_cpp(w, 9)

    def reverse(x, n_head):  # what transformers does when it reads a GGUF
        return x.reshape(n_head, x.shape[0] // n_head // 2, 2, *x.shape[1:]).swapaxes(2, 1).reshape(x.shape)

    assert np.array_equal(reverse(permuted, 9), w) and not np.array_equal(permuted, w)


@pytest.fixture(scope="module")
def torch_model():
    return F.load_torch_from_gguf(cu.bundled_model_path())


def test_export_round_trip_agrees_with_llama_cpp(torch_model, tmp_path_factory):
    model, _ = torch_model
    out = G.export_gguf(model, cu.bundled_model_path(), tmp_path_factory.mktemp("x") / "smol.gguf")
    check = G.compare_with_llama_cpp(model, out, ["Hola, ¿qué tal?", "The capital of France is"])
    assert check["top1_agree"] == 2 and check["max_rel_diff"] < 0.01
    llm = cu.load_llm(str(out), n_ctx=256)
    assert llm.metadata["tokenizer.chat_template"] == cu.load_llm(n_ctx=256).metadata[
        "tokenizer.chat_template"]


def test_export_refuses_a_mismatched_template(torch_model, tmp_path):
    model, _ = torch_model
    with pytest.raises(G.ExportError, match="arquitectura 'llama'"):
        G.export_gguf(model, cu.base_model_path(), tmp_path / "x.gguf")  # Gemma, not llama
    assert not list(tmp_path.iterdir())
    with pytest.raises(cu.ModelNotFoundError):
        G.export_gguf(model, tmp_path / "nada.gguf", tmp_path / "x.gguf")


# --------------------------------------------------------------------------- which model chapter 06 trains


@pytest.fixture(scope="module")
def fake_llamas(tmp_path_factory):
    from .test_memory_guard import LLAMA_SHAPES, fake_llama_gguf

    folder = tmp_path_factory.mktemp("fake-llamas")
    return {name: fake_llama_gguf(folder / f"{name}.gguf", name) for name in LLAMA_SHAPES}


BIG_CPU = CPU_8GB.with_changes(ram_total=64 * 2**30, ram_available=60 * 2**30)
BIG_GPU = COLAB_T4.with_changes(ram_total=64 * 2**30, ram_available=60 * 2**30,
                                gpu=cu.GpuInfo("RTX 4090", 24 * 2**30, 23 * 2**30))


@pytest.mark.parametrize("model, hw, trains_it, words", [
    ("bundled", CPU_8GB, True, "modelo del curso"),
    ("standin", CPU_8GB, True, "es pequeño"),
    ("Llama-3.2-1B", BIG_CPU, False, "veces los 135 M"),  # fits in RAM, too slow on a CPU
    ("Llama-3.2-1B", CPU_8GB, False, "no cabe en la RAM"),
    ("Llama-3.2-1B", COLAB_T4, True, "hay GPU"),
    ("Llama-3.2-3B", COLAB_T4, False, "Unsloth"),  # 12.8 GB in float32: Colab's RAM
    ("Llama-3.1-8B", BIG_GPU, False, "de GPU para entrenar"),
])
def test_choose_training_model(fake_llamas, clean_env, model, hw, trains_it, words):
    from course_utils import gating

    if model == "bundled":
        choice = cu.choose_model(hw=hw, env={})
    else:
        path = cu.standin.standin_path("tied") if model == "standin" else fake_llamas[model]
        choice = cu.choose_model(str(path), hw=hw, env={})
    trained, reason = F.choose_training_model(choice, hw)
    assert words in reason
    if trains_it:
        assert trained is choice
    else:  # the bundled model, with the reason attached, recognised as the bundled one
        assert gating.is_bundled(trained) and trained.path == cu.bundled_model_path()
        assert trained.reason == reason and "SmolLM2-135M" in reason


def test_finetuned_file_depends_on_the_base_model(monkeypatch, tmp_path, clean_env):
    from course_utils import standin

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    bundled = cu.choose_model(env={})
    tied, untied = standin.standin_path("tied"), standin.standin_path("untied")
    assert F.finetuned_file_name(bundled) == F.FINETUNED_FILE
    assert F.finetuned_file_name(cu.bundled_model_path()) == F.FINETUNED_FILE
    names = {F.finetuned_file_name(tied), F.finetuned_file_name(untied), F.FINETUNED_FILE}
    assert len(names) == 3 and all(n.endswith(".Q8_0.gguf") for n in names)
    assert F.finetuned_file_name(str(tied)) == F.finetuned_file_name(tied)  # stable
    assert F.finetuned_file_name(tied).startswith("llama3-standin-tied-")
    # no argument: the fine-tune of the model chapter 06 trains now (the ladder's choice)
    assert F.finetuned_model_path() == tmp_path / F.FINETUNED_FILE
    monkeypatch.setenv("COURSE_MODEL", str(tied))
    assert F.finetuned_model_path() == tmp_path / F.finetuned_file_name(tied)
    assert F.finetuned_model_path(bundled) == tmp_path / F.FINETUNED_FILE
    # the F16 accuracy chapter 06 writes for chapter 08 sits beside each fine-tune, one per base
    assert F.finetuned_metrics_path(tied) == F.finetuned_model_path(tied).with_suffix(".json")
    assert F.finetuned_metrics_path(bundled) != F.finetuned_metrics_path(tied)


def test_importing_course_utils_leaves_room_for_unsloth_first():
    """Unsloth must be imported before transformers, TRL and PEFT (chapter 06, first cells)."""
    import subprocess
    import sys

    code = ("import sys, course_utils as cu; hw, choice = cu.describe_setup(); "
            "cu.finetune.choose_backend(hw); "
            "print(sorted(m for m in ('transformers', 'trl', 'peft', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "COURSE_MODEL": ""})
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_trainable_parameters_equal_the_formula(torch_model):
    """PEFT's count of LoRA parameters is the formula's, for the model actually loaded."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    import copy

    model = copy.deepcopy(torch_model[0])
    spec = ArchSpec.from_gguf(cu.bundled_model_path())
    peft_model = get_peft_model(model, PeftLoraConfig(r=4, target_modules=list(F.TARGET_MODULES),
                                                      task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    assert trainable == F.lora_parameters(spec, 4) and total == spec.n_params + trainable
