"""GGUF -> torch -> GGUF for real Llama 3.x structure, on the stand-in (tied like 3.2, untied like 3.1).

The same check chapter 06 makes (``gguf_export.compare_with_llama_cpp``: the torch model and the
exported file in llama.cpp give the same next-token logits), plus what a Llama 3 file adds over
the bundled SmolLM2: the "llama3" RoPE scaling stored in ``rope_freqs.weight``, tied or untied
output heads, and Llama 3's tokenizer and chat template.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import course_utils as cu
from course_utils import finetune as F
from course_utils import gguf_export as G
from course_utils import standin
from course_utils.memory_guard import read_gguf_header

#: ~600 tokens: far enough for the RoPE scaling to change the attention (wavelengths > 2 048
#: tokens are stretched; at position 600 their angles already differ by radians).
LONG = " ".join(["La reseña dice que el producto llegó tarde, pero funciona bien."] * 40)
PROBES = ["Hola, ¿qué tal?", "The capital of France is", LONG]


_LOADED: dict[str, tuple] = {}


def _load(variant: str) -> tuple:
    """(variant, path, model, tokenizer), loaded once per test session."""
    if variant not in _LOADED:
        path = standin.standin_path(variant)
        _LOADED[variant] = (variant, path, *F.load_torch_from_gguf(path))
    return _LOADED[variant]


@pytest.fixture(scope="module", params=["tied", "untied"])
def loaded(request):
    return _load(request.param)


def _plain_rope(model):
    """The same model with the plain RoPE transformers' own GGUF loader would give it."""
    plain = copy.deepcopy(model)
    plain.config.rope_parameters = {"rope_type": "default",
                                    "rope_theta": model.config.rope_parameters["rope_theta"]}
    plain.model.rotary_emb = type(model.model.rotary_emb)(config=plain.config)
    return plain


def _sharpen(model, scale: float = 8.0):
    """Scale attn_q (kept exactly representable in F16): sharper attention, position matters more."""
    import torch

    sharp = copy.deepcopy(model)
    with torch.no_grad():
        for layer in sharp.model.layers:
            w = layer.self_attn.q_proj.weight
            w.copy_((w * scale).half().float())
    return sharp


# --------------------------------------------------------------------------- loading into torch


def test_output_head_tied_or_untied_as_in_the_file(loaded):
    variant, path, model, _ = loaded
    header = read_gguf_header(path)
    assert model.config.tie_word_embeddings is (variant == "tied") is header.tied_embeddings
    head, embed = model.lm_head.weight, model.model.embed_tokens.weight
    if variant == "tied":  # the same tensor, not a random lm_head
        assert head.data_ptr() == embed.data_ptr()
    else:
        stored = np.asarray(header.tensor_data("output.weight"), dtype=np.float32)
        assert np.array_equal(head.detach().numpy(), stored)
        assert not np.array_equal(head.detach().numpy(), embed.detach().numpy())


def test_llama3_rope_scaling_is_restored_from_rope_freqs(loaded):
    import torch

    variant, path, model, _ = loaded
    spec = standin.VARIANTS[variant]
    rope = model.config.rope_parameters
    assert rope["rope_type"] == "llama3" and rope["factor"] == spec.rope_factor
    assert rope["original_max_position_embeddings"] == spec.original_context
    # what llama.cpp computes: θ_i = base_i / rope_freqs_i
    header = read_gguf_header(path)
    hd = spec.head_dim
    base = 1.0 / spec.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    expected = base / np.asarray(header.tensor_data("rope_freqs.weight"), dtype=np.float64)
    got = model.model.rotary_emb.inv_freq.to(torch.float64).numpy()
    assert np.allclose(got, expected, rtol=1e-5)
    assert not np.allclose(got, base, rtol=1e-2)  # plain RoPE would be wrong


class _Header:
    """The few fields rope_parameters_from_gguf reads, with made-up RoPE factors."""

    def __init__(self, factors):
        from pathlib import Path

        self.path, self._factors = Path("inventado.gguf"), np.asarray(factors, dtype=np.float32)
        self.tensors = {"rope_freqs.weight": None}

    def arch_get(self, key, default=None):
        return {"rope.freq_base": 500000.0, "attention.head_count": 4,
                "embedding_length": 128, "rope.dimension_count": 32}.get(key, default)

    def tensor_data(self, name):
        return self._factors


def test_unknown_rope_factors_are_a_clear_error():
    known = standin.llama3_rope_factors(32, 500000.0, 8.0)
    assert F.rope_parameters_from_gguf(_Header(known))["factor"] == 8.0
    with pytest.raises(F.FineTuneError, match="escalado conocido"):
        F.rope_parameters_from_gguf(_Header(standin.llama3_rope_factors(32, 500000.0, 16.0)))


def test_llama3_tokenizer_matches_the_tokenizers_library_and_llama_cpp(loaded):
    _, path, _, tokenizer = loaded
    reference = cu.load_llama3_tokenizer()
    texts = ["Hola, ¿qué tal?  Ñandú 1234567 😀", "def f(x):\n\treturn x**2\n\n\n",
             "   varios   espacios", "Café über naïve 日本語 I'm you'll", LONG]
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert ids == reference.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids) == text
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (standin.BOS_ID, standin.EOT_ID)
    assert len(tokenizer) == standin.VOCAB_SIZE
    messages = [{"role": "system", "content": "Eres un clasificador."},
                {"role": "user", "content": "Reseña:\n\nMe encanta."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    llm = cu.load_llm(str(path), n_ctx=256)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == llm.tokenize(
        text.encode("utf-8"), add_bos=False, special=True)
    llm.close()


# --------------------------------------------------------------------------- export and round trip


def test_round_trip_agrees_with_llama_cpp(loaded, tmp_path):
    variant, path, model, _ = loaded
    out = G.export_gguf(model, path, tmp_path / f"{variant}.gguf")
    template, exported = read_gguf_header(path), read_gguf_header(out)
    assert list(exported.tensors) == list(template.tensors)  # rope_freqs, output.weight iff untied
    assert ("output.weight" in exported.tensors) is (variant == "untied")
    assert np.array_equal(exported.tensor_data("rope_freqs.weight"),
                          template.tensor_data("rope_freqs.weight"))
    assert {k: v for k, v in exported.fields.items() if k != "general.file_type"} == {
        k: v for k, v in template.fields.items() if k != "general.file_type"}
    check = G.compare_with_llama_cpp(model, out, PROBES)
    assert check["longest_tokens"] > 500
    assert check["top1_agree"] == len(PROBES) and check["max_rel_diff"] < 1e-3, check


def test_the_round_trip_check_catches_a_wrong_rope(tmp_path):
    """With plain RoPE (what transformers' GGUF loader builds) the long probe disagrees.

    On the untied stand-in: Llama 3.1's factor 8 is the smaller change of the two.
    """
    variant, path, model, _ = _load("untied")
    sharp = _sharpen(model)
    out = G.export_gguf(sharp, path, tmp_path / f"{variant}-sharp.gguf")
    right = G.compare_with_llama_cpp(sharp, out, [LONG])
    wrong = G.compare_with_llama_cpp(_plain_rope(sharp), out, [LONG])
    assert right["max_rel_diff"] < 1e-3 < wrong["max_rel_diff"], (right, wrong)


def test_export_refuses_a_template_with_the_other_output_head(loaded, tmp_path):
    variant, _, model, _ = loaded
    other = standin.standin_path("untied" if variant == "tied" else "tied")
    with pytest.raises(G.ExportError, match="cabeza de salida"):
        G.export_gguf(model, other, tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())


def test_names_both_ways():
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                 "model.layers.7.self_attn.k_proj.weight", "model.layers.0.mlp.up_proj.weight"):
        assert G.hf_name(G.gguf_name(name)) == name
    with pytest.raises(KeyError):
        G.hf_name("rope_freqs.weight")


def test_lora_adapter_gguf_gives_the_peft_models_logits(tmp_path):
    """A GGUF LoRA adapter applied by llama.cpp to the base file = the PEFT model, not merged."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    _, path, model, _ = _load("tied")
    peft_model = get_peft_model(copy.deepcopy(model), PeftLoraConfig(
        r=4, lora_alpha=8, target_modules=list(F.TARGET_MODULES), task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():  # B starts at zero: give the adapter something to change
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    adapter = G.export_lora_adapter(peft_model, path, tmp_path / "adapter.gguf")
    header = read_gguf_header(adapter)
    assert header.fields["general.type"] == "adapter"
    assert header.fields["adapter.lora.alpha"] == 8
    n_layers = model.config.num_hidden_layers
    assert len(header.tensors) == 2 * len(F.TARGET_MODULES) * n_layers
    a, b = (header.tensors["blk.0.attn_q.weight.lora_a"], header.tensors["blk.0.attn_q.weight.lora_b"])
    assert a.shape == (4, model.config.hidden_size) and b.shape[1] == 4  # A: r x d_in, B: d_out x r

    with_adapter = G.compare_with_llama_cpp(peft_model, path, PROBES, lora_path=adapter)
    assert with_adapter["top1_agree"] == len(PROBES) and with_adapter["max_rel_diff"] < 0.01
    # and the adapter matters: without it llama.cpp gives the base model's logits, not these
    without = G.compare_with_llama_cpp(peft_model, path, PROBES)
    assert without["max_rel_diff"] > 10 * with_adapter["max_rel_diff"]


def test_lora_adapter_needs_the_unmerged_model(tmp_path):
    _, path, model, _ = _load("tied")
    with pytest.raises(G.ExportError, match="LoRA"):
        G.export_lora_adapter(model, path, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
