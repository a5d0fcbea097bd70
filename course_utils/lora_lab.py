"""Quick LoRA experiments: LoRA on the last decoder layers, trained from their cached inputs.

With LoRA only on the layers from ``first_layer`` up, everything below them is frozen: the hidden
state that enters ``first_layer`` is the same at every step and every epoch. :class:`TopLayerLab`
computes it **once** per example and then trains only the top layers from it, so a training step
costs a few of the model's layers instead of all of them. That makes experiments that need many
short runs affordable on a CPU: a learning-rate sweep from the same starting point, or training
far too long on a few examples to watch the validation loss go back up.

The loss is :func:`course_utils.finetune.answer_loss`'s (cross-entropy on the answer tokens, the
output head only where it is scored); the tests check that it equals that function on the whole
model with LoRA on the same layers.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from .finetune import (
    TARGET_MODULES,
    Example,
    FineTuneError,
    _batches,
    align_special_tokens,
    encode_examples,
    padded_ids,
    scored_positions,
    shared_prefix,
)


@dataclass
class LabRun:
    """One run: ``train`` holds (step, training loss); ``val`` holds (step, validation loss,
    fraction of validation answers whose every token is the most likely one)."""

    learning_rate: float
    steps: int
    n_examples: int
    seconds: float = 0.0
    train: list[tuple[int, float]] = field(default_factory=list)
    val: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def best_val(self) -> tuple[int, float, float]:
        """The evaluation with the lowest validation loss."""
        return min(self.val, key=lambda v: v[1])


class _Reached(Exception):
    """Raised by the hook on ``first_layer``: the layers above it are not needed."""


class TopLayerLab:
    """LoRA (PEFT) on the last ``n_top`` decoder layers of ``causal_lm``, trained from cached inputs.

    ``causal_lm`` is modified in place (PEFT adds the LoRA matrices): give the lab its own copy
    of the model. Every :meth:`run` starts from the same LoRA initialisation (``B = 0``: the model
    as loaded), so runs differ only in what :meth:`run` is told.
    """

    def __init__(self, causal_lm, tokenizer, train_rows: list[dict], val_rows: list[dict],
                 system: str | None = None, n_top: int = 2, r: int = 16, alpha: int = 32,
                 batch_size: int = 8, max_train: int | None = 48, seed: int = 0,
                 progress: bool = True):
        import torch
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        n_layers = causal_lm.config.num_hidden_layers
        if not 1 <= n_top <= n_layers:
            raise FineTuneError(f"n_top={n_top}: el modelo tiene {n_layers} capas; elige entre 1 "
                                f"y {n_layers}.")
        if not train_rows or not val_rows:
            raise FineTuneError("TopLayerLab necesita ejemplos de entrenamiento y de validación.")
        self.first_layer = n_layers - n_top
        self.batch_size = batch_size
        self.seed = seed
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        align_special_tokens(causal_lm, tokenizer)
        self.pad_id = tokenizer.pad_token_id
        train = encode_examples(tokenizer, train_rows, system)
        # the classes mixed as in training, then cut: the first examples are a balanced sample
        order = [e for b in _batches(train, batch_size, random.Random(seed)) for e in b]
        self.train = order[:max_train] if max_train else order
        self.val = encode_examples(tokenizer, val_rows, system)
        self.model = causal_lm
        start = time.perf_counter()
        with torch.no_grad():
            self._train_hidden = self._cache(self.train, progress, "capas congeladas (entrenamiento)")
            self._val_hidden = self._cache(self.val, progress, "capas congeladas (validación)")
        self.cache_seconds = time.perf_counter() - start
        torch.manual_seed(seed)
        self.peft_model = get_peft_model(causal_lm, PeftLoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(TARGET_MODULES),
            layers_to_transform=list(range(self.first_layer, n_layers)), bias="none",
            task_type="CAUSAL_LM"))
        self._initial = {k: v.detach().clone() for k, v in self.peft_model.state_dict().items()
                         if "lora_" in k}

    # ------------------------------------------------------------------ cached inputs
    def _lower(self, **kwargs):
        """Run the frozen layers (the decoder stops at ``first_layer``); return its input."""
        captured = {}

        def hook(module, args, kwargs_):
            captured["hidden"] = args[0] if args else kwargs_["hidden_states"]
            raise _Reached

        handle = self.model.model.layers[self.first_layer].register_forward_pre_hook(
            hook, with_kwargs=True)
        try:
            self.model.model(**kwargs)
        except _Reached:
            pass
        finally:
            handle.remove()
        return captured["hidden"]

    def _cache(self, examples: list[Example], progress: bool, desc: str):
        """Per chunk of examples: the hidden states entering ``first_layer``, all positions.

        The tokens every example of a chunk starts with (system prompt and instruction) go
        through the frozen layers once, as in :func:`~course_utils.finetune.answer_loss`.
        """
        import torch
        from transformers import DynamicCache

        chunks = [examples[k:k + self.batch_size]
                  for k in range(0, len(examples), self.batch_size)]
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=desc, leave=False)
        out = []
        for chunk in chunks:
            n_shared = shared_prefix(chunk) if len(chunk) > 1 else 0
            ids = padded_ids(chunk, self.pad_id, skip=n_shared)
            if n_shared:
                cache = DynamicCache(config=self.model.config)
                prefix = self._lower(input_ids=torch.tensor([chunk[0].ids[:n_shared]]),
                                     past_key_values=cache, use_cache=True)
                cache.batch_repeat_interleave(len(chunk))
                rest = self._lower(input_ids=ids, past_key_values=cache, use_cache=True)
                hidden = torch.cat([prefix.expand(len(chunk), -1, -1), rest], dim=1)
            else:
                hidden = self._lower(input_ids=ids)
            out.append((hidden.detach(), chunk))
        return out

    # ------------------------------------------------------------------ the top layers
    def _loss(self, hidden, examples: list[Example]):
        """Cross-entropy on the answers and the share of answers predicted token by token."""
        import torch

        lm = self.peft_model.get_base_model()
        positions = torch.arange(hidden.shape[1])[None]
        rope = lm.model.rotary_emb(hidden, position_ids=positions)
        # an explicit causal mask (an eager attention would apply none if given None); the
        # padding is on the right, after every real token, so no real token sees it
        n = hidden.shape[1]
        causal = torch.full((n, n), float("-inf"), dtype=hidden.dtype).triu(1)[None, None]
        h = hidden
        for layer in lm.model.layers[self.first_layer:]:
            h = layer(h, attention_mask=causal, position_embeddings=rope, position_ids=positions)
        h = lm.model.norm(h)
        rows, cols, target = scored_positions(examples)
        logits = lm.lm_head(h[rows, cols]).float()
        loss = torch.nn.functional.cross_entropy(logits, target)
        right = (logits.argmax(-1) == target).split([e.end - e.start for e in examples])
        exact = sum(bool(x.all()) for x in right) / len(examples)
        return loss, exact

    def validate(self) -> tuple[float, float]:
        """(validation loss, exact-answer share) with the LoRA weights as they are now."""
        import torch

        total_loss = total_exact = 0.0
        with torch.no_grad():
            for hidden, chunk in self._val_hidden:
                loss, exact = self._loss(hidden, chunk)
                total_loss += loss.item() * len(chunk)
                total_exact += exact * len(chunk)
        return total_loss / len(self.val), total_exact / len(self.val)

    def run(self, learning_rate: float, steps: int, n_examples: int | None = None,
            eval_every: int = 2) -> LabRun:
        """Train from the initial LoRA weights: AdamW at a constant ``learning_rate``, gradient
        clipping at 1, ``steps`` batches cycling in a fixed order (no reshuffling) over the first
        ``n_examples`` cached examples (all by default); the validation loss before training and
        every ``eval_every`` steps."""
        import torch

        self.peft_model.load_state_dict(self._initial, strict=False)
        self.peft_model.train()
        trainable = [p for p in self.peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
        n_examples = min(n_examples or len(self.train), len(self.train))
        batches, left = [], n_examples  # the cached chunks are the batches, cut at n_examples
        for hidden, chunk in self._train_hidden:
            if left <= 0:
                break
            batches.append((hidden[:left], chunk[:left]))
            left -= len(chunk)
        result = LabRun(learning_rate, steps, n_examples)
        result.val.append((0, *self.validate()))
        start = time.perf_counter()
        for step in range(1, steps + 1):
            hidden, chunk = batches[(step - 1) % len(batches)]
            loss, _ = self._loss(hidden, chunk)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            result.train.append((step, loss.item()))
            if step % eval_every == 0 or step == steps:
                result.val.append((step, *self.validate()))
        result.seconds = time.perf_counter() - start
        self.peft_model.eval()
        return result
