"""``lora_lab.TopLayerLab``: LoRA on the top layers trained from cached inputs, on the Llama 3
stand-in (real Llama 3 tokenizer and template, tiny random weights)."""

from __future__ import annotations

import math

import pytest

from course_utils import finetune as F
from course_utils import lora_lab, sft_data, standin

from .test_lora_loop import ROWS as LOOP_ROWS

ROWS = [  # six of the loop's tests and two more, so that validation has examples of its own
    *LOOP_ROWS,
    *({"instruction": "Clasifica la reseña.", "input": text, "output": label}
      for text, label in [("Perfecto para regalar.", "POSITIVO"),
                          ("Se rompió a la semana.", "NEGATIVO")]),
]
SYSTEM = sft_data.SENTIMENT_SYSTEM


@pytest.fixture()
def lab():
    model, tokenizer = F.load_torch_from_gguf(standin.standin_path("tied"))
    return lora_lab.TopLayerLab(model, tokenizer, ROWS[:6], ROWS[6:], SYSTEM, n_top=1,
                                batch_size=3, max_train=None, progress=False), tokenizer


def test_the_cached_loss_is_the_whole_models_loss(lab):
    """Frozen layers computed once (prefix shared) + top layers = the model run end to end."""
    import torch

    lab, tokenizer = lab
    with torch.no_grad():
        for i, (hidden, chunk) in enumerate(lab._train_hidden + lab._val_hidden):
            cached, _ = lab._loss(hidden, chunk)
            whole = F.answer_loss(lab.peft_model, chunk, lab.pad_id, share_prefix=False)
            assert math.isclose(cached.item(), whole.item(), rel_tol=1e-4), i


def test_the_cached_gradients_are_the_whole_models(lab):
    import torch

    lab, _ = lab
    run = lab.run(1e-2, steps=2)  # non-zero B, so that the gradient of A is not zero either
    hidden, chunk = lab._train_hidden[0]
    params = [p for p in lab.peft_model.parameters() if p.requires_grad]
    lab._loss(hidden, chunk)[0].backward()
    cached = [p.grad.clone() for p in params]
    lab.peft_model.zero_grad()
    F.answer_loss(lab.peft_model, chunk, lab.pad_id, share_prefix=False).backward()
    for a, p in zip(cached, params):
        assert torch.allclose(a, p.grad, rtol=1e-3, atol=1e-6)
    assert run.steps == 2 and len(run.train) == 2


def test_each_run_starts_from_the_same_weights_and_records_its_curves(lab):
    lab, _ = lab
    first = lab.run(1e-2, steps=4, eval_every=2)
    again = lab.run(1e-2, steps=4, eval_every=2)
    assert [s for s, *_ in first.val] == [0, 2, 4]
    assert first.val == again.val and first.train == again.train  # same start, same batches
    assert first.val[0][1] == lab.run(0.0, steps=1).val[-1][1]  # lr 0: the model as loaded
    few = lab.run(1e-2, steps=3, n_examples=3)
    assert few.n_examples == 3
    assert 0 <= first.best_val[2] <= 1 and first.best_val[1] == min(v[1] for v in first.val)


def test_only_the_top_layers_get_lora(lab):
    lab, _ = lab
    n_layers = lab.model.config.num_hidden_layers
    with_lora = {int(name.split(".layers.")[1].split(".")[0])
                 for name, p in lab.peft_model.named_parameters() if p.requires_grad}
    assert with_lora == {n_layers - 1}


def test_a_wrong_number_of_layers_is_refused_in_spanish():
    model, tokenizer = F.load_torch_from_gguf(standin.standin_path("tied"))
    with pytest.raises(F.FineTuneError, match="capas"):
        lora_lab.TopLayerLab(model, tokenizer, ROWS[:6], ROWS[6:], n_top=0, progress=False)


def test_the_top_layers_are_causal_with_eager_attention_too(lab):
    """The mask is explicit: with ``eager`` attention (which applies no mask when given none)
    the answer tokens still cannot see themselves, so the loss stays the model's."""
    import torch

    lab, _ = lab
    lab.model.config._attn_implementation = "eager"
    with torch.no_grad():
        hidden, chunk = lab._train_hidden[0]
        cached, _ = lab._loss(hidden, chunk)
        whole = F.answer_loss(lab.peft_model, chunk, lab.pad_id, share_prefix=False)
    assert math.isclose(cached.item(), whole.item(), rel_tol=1e-4)
