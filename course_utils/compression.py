"""Pruning and distillation on small torch models, measured honestly.

* **Magnitude pruning** sets the smallest weights to zero. The weights stay in dense tensors:
  without sparse storage and sparse kernels the file is just as big and the matrix products just
  as slow (zeros are multiplied like any other number). What changes is quality.
  Semi-structured ``2:4`` sparsity (two zeros in every four weights) is the pattern sparse GPU
  hardware can skip; methods such as SparseGPT and Wanda choose which weights to drop better than
  magnitude alone.
* **Distillation** trains a small *student* to imitate a *teacher*'s full next-token
  distribution (soft targets), not only the one right token. The loss from the course notes,
  written for language models (one distribution per *token*, not per sequence).
"""

from __future__ import annotations

import gzip
import io
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.utils import prune

#: Layers never pruned by default: in tied models (SmolLM2) ``lm_head`` *is* the embedding matrix.
DEFAULT_SKIP = ("lm_head",)


def prunable_linears(model, skip=DEFAULT_SKIP) -> list[tuple[str, torch.nn.Linear]]:
    """The ``nn.Linear`` layers of ``model`` whose name contains none of ``skip``."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not any(s in name for s in skip)]


def magnitude_prune(model, amount: float, skip=DEFAULT_SKIP):
    """Zero the ``amount`` fraction of smallest-magnitude weights of every linear layer (in place).

    Per layer (``l1_unstructured``) and made permanent with ``prune.remove``, as in the course
    notes. Returns the model.
    """
    if not 0 <= amount < 1:
        raise ValueError("amount es la fracción de pesos a poner a cero: entre 0 y 1 (sin el 1).")
    if amount == 0:
        return model
    for _, module in prunable_linears(model, skip):
        prune.l1_unstructured(module, name="weight", amount=amount)
        prune.remove(module, "weight")
    return model


@torch.no_grad()
def prune_n_m_(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Semi-structured ``n:m`` pruning, in place: in every group of ``m`` consecutive weights of a
    row, the ``n`` smallest in magnitude become zero (2:4 = half the weights, in a fixed pattern).

    The pattern is what sparse hardware can skip (NVIDIA GPUs since Ampere multiply 2:4 matrices
    with sparse tensor cores): unlike unstructured pruning, every group has exactly ``n`` zeros.
    Rows must have a multiple of ``m`` weights. Returns ``weight``.
    """
    if not 0 < n < m:
        raise ValueError("n:m necesita 0 < n < m (por ejemplo 2:4).")
    if weight.shape[-1] % m:
        raise ValueError(f"Las filas tienen {weight.shape[-1]} pesos: no es múltiplo de {m}.")
    groups = weight.view(-1, m)
    smallest = groups.abs().argsort(dim=1, stable=True)[:, :n]
    groups.scatter_(1, smallest, 0.0)
    return weight


def semi_structured_prune(model, n: int = 2, m: int = 4, skip=DEFAULT_SKIP):
    """:func:`prune_n_m_` on every prunable linear layer of ``model`` (in place). Returns it."""
    for _, module in prunable_linears(model, skip):
        prune_n_m_(module.weight.data, n, m)
    return model


def follows_n_m(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True when every group of ``m`` consecutive weights of each row has at least ``n`` zeros."""
    return bool(((weight.reshape(-1, m) == 0).sum(dim=1) >= n).all())


def sparsity(model, skip=DEFAULT_SKIP) -> float:
    """Fraction of exact zeros in the prunable linear weights."""
    zeros = total = 0
    for _, module in prunable_linears(model, skip):
        zeros += int((module.weight == 0).sum())
        total += module.weight.numel()
    return zeros / total


def saved_sizes(model) -> tuple[int, int]:
    """``(bytes saved by torch.save, bytes after gzip)`` of the model's ``state_dict``.

    Dense tensors keep every zero, so the first number does not move with pruning; the second
    does (runs of zeros compress), which is the only size win without a sparse format.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    raw = buffer.getvalue()
    return len(raw), len(gzip.compress(raw, compresslevel=1))


@torch.no_grad()
def perplexity(model, input_ids: torch.Tensor) -> float:
    """Perplexity of a causal LM on one sequence of token ids (1-D or ``[1, n]``)."""
    ids = input_ids.reshape(1, -1)
    logits = model(ids).logits[0, :-1]
    return math.exp(F.cross_entropy(logits.float(), ids[0, 1:]).item())


@torch.no_grad()
def matmul_seconds(*weights: torch.Tensor, n_tokens: int = 256,
                   repeats: int = 50) -> list[float]:
    """Median time of ``x @ W.T`` (the core of a linear layer) for each weight matrix.

    The matrices are timed in turns, ``repeats`` times each, so that a slow moment of the
    machine hits all of them alike; the median ignores the outliers.
    """
    x = torch.randn(n_tokens, weights[0].shape[1], generator=torch.Generator().manual_seed(0))
    times: list[list[float]] = [[] for _ in weights]
    for w in weights:
        x @ w.T
    for _ in range(repeats):
        for w, bucket in zip(weights, times):
            t0 = time.perf_counter()
            x @ w.T
            bucket.append(time.perf_counter() - t0)
    return [sorted(bucket)[len(bucket) // 2] for bucket in times]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor, temperature: float = 2.0,
                      alpha: float = 0.5) -> torch.Tensor:
    """The notes' loss: ``alpha·T²·KL(teacher_T ‖ student_T) + (1 − alpha)·CE(student, labels)``.

    Corrected for language models: logits of shape ``[..., vocab]`` are flattened to one row per
    token, so ``reduction="batchmean"`` averages over *tokens* (on ``[batch, seq, vocab]`` it
    would divide by the batch size only and scale the KL term by the sequence length). Positions
    with label ``-100`` are ignored in both terms.
    """
    vocab = student_logits.shape[-1]
    s = student_logits.reshape(-1, vocab)
    t = teacher_logits.reshape(-1, vocab).to(s.dtype)
    y = labels.reshape(-1)
    keep = y != -100
    s, t, y = s[keep], t[keep], y[keep]
    soft_targets = F.softmax(t / temperature, dim=-1)
    soft_prob = F.log_softmax(s / temperature, dim=-1)
    soft = F.kl_div(soft_prob, soft_targets, reduction="batchmean") * temperature**2
    hard = F.cross_entropy(s, y)
    return alpha * soft + (1 - alpha) * hard


def n_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def synthetic_task(n: int, seed: int, n_features: int = 20, n_classes: int = 10,
                   label_noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small, non-linear classification problem: ``(x, noisy labels, true labels)``.

    Ten Gaussian clusters in 20 dimensions, bent with a sine, and ``label_noise`` of the labels
    replaced at random (real data has wrong labels too). The clusters are the same for every
    ``seed``; ``seed`` only draws the samples.
    """
    centers = torch.randn(n_classes, n_features, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(n_classes, (n,), generator=g)
    x = 1.2 * centers[y] + 1.5 * torch.randn(n, n_features, generator=g)
    x = x + 0.5 * torch.sin(2 * x)
    flip = torch.rand(n, generator=g) < label_noise
    noisy = torch.where(flip, torch.randint(n_classes, (n,), generator=g), y)
    return x, noisy, y


def mlp(*sizes: int, seed: int = 0) -> torch.nn.Sequential:
    """A ReLU multilayer perceptron with the given layer sizes."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def train_classifier(model, x: torch.Tensor, y: torch.Tensor,
                     teacher_logits: torch.Tensor | None = None, *, steps: int = 600,
                     batch_size: int = 64, lr: float = 3e-3, temperature: float = 2.0,
                     alpha: float = 0.5, seed: int = 0) -> list[float]:
    """Train ``model`` on ``(x, y)``; returns the loss of each step.

    With ``teacher_logits`` it minimises :func:`distillation_loss` (the notes' loss); without,
    plain cross-entropy on the labels. Same data, steps, batches and seed: the loss is the only
    difference between the two runs.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator)
        out = model(x[idx])
        if teacher_logits is None:
            loss = F.cross_entropy(out, y[idx])
        else:
            loss = distillation_loss(out, teacher_logits[idx], y[idx], temperature, alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(-1) == y).float().mean().item()


@dataclass
class DistillationRun:
    """One run of :func:`distillation_experiment`: accuracies on clean test labels."""

    label_noise: float
    teacher_accuracy: float
    teacher_parameters: int
    student_parameters: int
    #: one row per training-set size: ``{"ejemplos", "solo etiquetas", "destilado"}``
    rows: list[dict] = field(default_factory=list)


def distillation_experiment(label_noise: float = 0.3, sizes=(200, 500, 2000), *,
                            teacher_examples: int = 20_000, test_examples: int = 5_000,
                            teacher_steps: int = 1500, student_steps: int = 600) -> DistillationRun:
    """Teacher trained on many examples; for each size, one student on labels only and one
    distilled (:func:`distillation_loss`), with the same data, steps, batches and seed.

    The training labels have ``label_noise`` of them replaced at random; the test labels are
    clean. Run it with ``label_noise=0`` as the control: what distillation gains without noise.
    """
    torch.manual_seed(0)
    x_teacher, y_teacher, _ = synthetic_task(teacher_examples, seed=0, label_noise=label_noise)
    x_test, _, y_test = synthetic_task(test_examples, seed=99)
    teacher = mlp(20, 128, 128, 10)
    train_classifier(teacher, x_teacher, y_teacher, steps=teacher_steps, batch_size=256)
    run = DistillationRun(label_noise, accuracy(teacher, x_test, y_test), n_parameters(teacher), 0)
    for n in sizes:
        x, y, _ = synthetic_task(n, seed=n, label_noise=label_noise)
        with torch.no_grad():
            soft = teacher(x)
        plain, student = mlp(20, 32, 10, seed=1), mlp(20, 32, 10, seed=1)
        train_classifier(plain, x, y, steps=student_steps)
        train_classifier(student, x, y, teacher_logits=soft, steps=student_steps)
        run.student_parameters = n_parameters(student)
        run.rows.append({"ejemplos": n, "solo etiquetas": accuracy(plain, x_test, y_test),
                         "destilado": accuracy(student, x_test, y_test)})
    return run
