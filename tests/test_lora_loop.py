"""The short LoRA training loop (``finetune.train_lora_loop``) and its pieces, on the Llama 3
stand-in (real Llama 3 tokenizer and template, tiny random weights) and SmolLM2's tokenizer."""

from __future__ import annotations

import math

import pytest

from course_utils import finetune as F
from course_utils.architecture import ArchSpec
from course_utils import sft_data, standin
from course_utils.models import bundled_model_path

ROWS = [
    {"instruction": "Clasifica la reseña.", "input": text, "output": label}
    for text, label in [
        ("Me encantó, funciona perfecto.", "POSITIVO"),
        ("Llegó roto y tarde.", "NEGATIVO"),
        ("Lo recibí el lunes.", "NEUTRAL"),
        ("Muy buena calidad, repetiría.", "POSITIVO"),
        ("No sirve para nada.", "NEGATIVO"),
        ("Es de color azul.", "NEUTRAL"),
    ]
]


@pytest.fixture(scope="module")
def standin_model():
    path = standin.standin_path("tied")
    return F.load_torch_from_gguf(path)


@pytest.mark.parametrize("which, closing", [("standin", "<|eot_id|>"), ("smollm2", "<|im_end|>")])
def test_the_scored_span_is_the_answer_and_the_token_that_closes_the_turn(which, closing):
    path = standin.standin_path("tied") if which == "standin" else bundled_model_path()
    tokenizer = F.load_tokenizer_from_gguf(path)
    examples = F.encode_examples(tokenizer, ROWS, sft_data.SENTIMENT_SYSTEM)
    for row, example in zip(ROWS, examples):
        scored = tokenizer.decode(example.ids[example.start:example.end])
        assert scored == row["output"] + closing
        assert example.end == len(example.ids)  # nothing after the closing token is kept
        prompt = tokenizer.decode(example.ids[:example.start])
        assert row["input"] in prompt and sft_data.SENTIMENT_SYSTEM in prompt


def test_answer_loss_equals_the_loss_over_full_logits(standin_model):
    """Applying the output head only where a token is scored changes nothing but the cost."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = standin_model
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"],
                                                  task_type="CAUSAL_LM"))
    batch = F.encode_examples(tokenizer, ROWS[:3], None)
    fast = F.answer_loss(peft_model, batch, tokenizer.eos_token_id)

    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), tokenizer.eos_token_id)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, e in enumerate(batch):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
        mask[i, :len(e.ids)] = 1
        labels[i, e.start:e.end] = torch.tensor(e.ids[e.start:e.end])
    with torch.no_grad():
        reference = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert math.isclose(fast.item(), reference.item(), rel_tol=1e-5)
    peft_model.unload()


def test_shared_prefix_stops_before_the_first_scored_position():
    batch = [F.Example([5, 6, 7, 8, 9], 4, 5, "A"), F.Example([5, 6, 7, 1, 2, 3], 5, 6, "B")]
    assert F.shared_prefix(batch) == 3  # 5 6 7 in both
    same = [F.Example([5, 6, 7, 8, 9], 4, 5, "A"), F.Example([5, 6, 7, 8, 9], 4, 5, "A")]
    assert F.shared_prefix(same) == 3  # the hidden state at 3 predicts the answer at 4
    assert F.shared_prefix([F.Example([1, 2], 1, 2, "A"), F.Example([3, 2], 1, 2, "A")]) == 0


def test_sharing_the_prefix_changes_neither_the_loss_nor_the_gradients(standin_model):
    """The system prompt and instruction go through the decoder once per batch: same numbers."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = standin_model
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj",
                                                                       "down_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    batch = F.encode_examples(tokenizer, ROWS[:4], sft_data.SENTIMENT_SYSTEM)
    assert F.shared_prefix(batch) > 20  # the system prompt and the instruction, at least
    grads = []
    losses = []
    for share in (False, True):
        peft_model.zero_grad()
        loss = F.answer_loss(peft_model, batch, tokenizer.eos_token_id, share_prefix=share)
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.clone() for p in peft_model.parameters() if p.requires_grad])
    assert math.isclose(losses[0], losses[1], rel_tol=1e-5)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    peft_model.unload()


def test_loop_trains_exactly_the_lora_parameters_and_records_its_run(standin_model):
    model, tokenizer = standin_model
    config = F.LoraConfig(r=4, alpha=8, learning_rate=1e-2, epochs=2, batch_size=2)
    peft_model, result = F.train_lora_loop(model, tokenizer, ROWS, ROWS[:2], config,
                                           progress=False, eval_every=3)
    spec = ArchSpec.from_gguf(standin.standin_path("tied"))
    assert result.trainable == F.lora_parameters(spec, 4)
    assert [step for step, _ in result.eval_losses] == [3, 6]  # 2 epochs x 3 batches
    assert all(math.isfinite(loss) for _, loss in result.losses + result.eval_losses)
    assert result.tokens_per_second > 0 and result.seconds > 0
    peft_model.unload()


def test_lora_from_a_layer_up_adapts_only_those_layers(standin_model):
    """Chapter 06 puts LoRA on the upper half of the layers: the count and the layers adapted."""
    model, tokenizer = standin_model
    spec = ArchSpec.from_gguf(standin.standin_path("tied"))
    first = spec.n_layers - 1
    config = F.LoraConfig(r=4, alpha=8, learning_rate=1e-2, batch_size=2, first_layer=first)
    peft_model, result = F.train_lora_loop(model, tokenizer, ROWS, None, config, progress=False)
    expected = F.lora_parameters(spec, 4, first_layer=first)
    assert result.trainable == expected == F.lora_parameters(spec, 4) // spec.n_layers
    adapted = {int(name.split(".layers.")[1].split(".")[0])
               for name, p in peft_model.named_parameters() if p.requires_grad}
    assert adapted == {first}
    assert all(math.isfinite(loss) for _, loss in result.losses)
    peft_model.unload()
    with pytest.raises(F.FineTuneError, match="capas"):
        F._add_lora(model, tokenizer, F.LoraConfig(first_layer=spec.n_layers))
    with pytest.raises(ValueError):
        F.lora_parameters(spec, 4, first_layer=spec.n_layers)


def test_batches_mix_the_answers_and_cover_every_example_once():
    import random

    # sorted by class, as a file written class by class would be
    examples = [F.Example([1, 2, 3], 2, 3, label) for label in "AAAAAABBBBBBCCCCCC"]
    for seed in range(3):
        batches = F._batches(examples, 3, random.Random(seed))
        assert sorted(id(e) for b in batches for e in b) == sorted(id(e) for e in examples)
        assert all(len({e.answer for e in b}) == 3 for b in batches)  # one of each class
    first = [[id(e) for e in b] for b in F._batches(examples, 3, random.Random(0))]
    other = [[id(e) for e in b] for b in F._batches(examples, 3, random.Random(1))]
    assert first != other  # still random


def test_torch_label_logprobs_are_the_answer_loss_of_the_label_tokens(standin_model):
    """``label_logprobs_torch`` agrees with ``answer_loss`` on the label's tokens (the closing
    token left out), and ``most_likely_labels`` picks the highest of them."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = standin_model
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"],
                                                  init_lora_weights=False))
    labels, system = sft_data.SENTIMENT_LABELS, sft_data.SENTIMENT_SYSTEM
    try:
        peft_model.train()
        preds = F.most_likely_labels(peft_model, tokenizer, ROWS, labels, system)
        assert peft_model.training  # left as it was found
        expected = []
        with torch.no_grad():
            for row in ROWS:
                scores = F.label_logprobs_torch(peft_model, tokenizer, row, labels, system)
                for e in F.encode_examples(tokenizer, [{**row, "output": x} for x in labels],
                                           system):
                    label_only = F.Example(e.ids[:e.end - 1], e.start, e.end - 1, e.answer)
                    n = label_only.end - label_only.start
                    assert tokenizer.decode(label_only.ids[label_only.start:]) == e.answer
                    loss = F.answer_loss(peft_model, [label_only], tokenizer.pad_token_id)
                    # the mean loss over the label's n tokens is minus their log-probability / n
                    assert math.isclose(scores[e.answer], -loss.item() * n, rel_tol=1e-4)
                expected.append(max(labels, key=scores.__getitem__))
        assert preds == expected
    finally:
        peft_model.unload()  # leave the module's model as it was


def test_torch_label_logprobs_refuse_a_model_that_cuts_the_input(standin_model):
    """Unsloth cuts inputs longer than its max_seq_length (with only a warning)."""
    import torch

    model, tokenizer = standin_model

    class Cutting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def forward(self, input_ids):
            return self.inner(input_ids=input_ids[:, :20])

    with pytest.raises(F.FineTuneError, match="cortó la entrada"):
        F.label_logprobs_torch(Cutting(model), tokenizer, ROWS[0], sft_data.SENTIMENT_LABELS,
                               sft_data.SENTIMENT_SYSTEM)
