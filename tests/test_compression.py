"""Pruning and distillation helpers (chapter 08), on tiny torch models."""

import pytest
import torch
import torch.nn.functional as F

from course_utils import compression as C


class TinyLM(torch.nn.Module):
    """Embedding + two linears + a tied head, like SmolLM2 in miniature."""

    def __init__(self, vocab=50, d=16):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, d)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, d))
        self.lm_head = torch.nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids):
        class Out:
            pass

        out = Out()
        out.logits = self.lm_head(self.mlp(self.embed(ids)))
        return out


def test_pruning_zeros_the_requested_fraction_and_skips_the_tied_head():
    model = TinyLM()
    assert [n for n, _ in C.prunable_linears(model)] == ["mlp.0", "mlp.2"]
    embed_before = model.embed.weight.clone()
    C.magnitude_prune(model, 0.5)
    assert C.sparsity(model) == pytest.approx(0.5, abs=0.01)
    assert torch.equal(model.embed.weight, embed_before)
    assert not any("weight_orig" in k for k in model.state_dict())  # made permanent


def test_pruning_removes_the_smallest_weights():
    layer = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -3.0, 0.2, 5.0]]))
    C.magnitude_prune(torch.nn.Sequential(layer), 0.5)
    assert layer.weight.tolist() == [[0.0, -3.0, 0.0, 5.0]]


def test_pruned_dense_model_is_not_smaller_on_disk_only_compressed():
    model = TinyLM(vocab=200, d=64)
    raw0, gz0 = C.saved_sizes(model)
    C.magnitude_prune(model, 0.7)
    raw1, gz1 = C.saved_sizes(model)
    assert abs(raw1 - raw0) < 0.01 * raw0
    assert gz1 < gz0


def test_prune_amount_is_validated():
    with pytest.raises(ValueError, match="entre 0 y 1"):
        C.magnitude_prune(TinyLM(), 1.0)


def test_perplexity_and_matmul_time():
    model = TinyLM()
    ids = torch.arange(20) % 50
    ppl = C.perplexity(model, ids)
    assert 1 < ppl < 1e4
    times = C.matmul_seconds(model.mlp[0].weight, model.mlp[2].weight.T, n_tokens=8, repeats=3)
    assert len(times) == 2 and all(t > 0 for t in times)


def seed_loss(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    """The course notes' formula, verbatim, for 2-D logits."""
    soft_targets = F.softmax(teacher_logits / temperature, dim=-1)
    soft_prob = F.log_softmax(student_logits / temperature, dim=-1)
    soft_targets_loss = F.kl_div(soft_prob, soft_targets, reduction="batchmean") * temperature**2
    hard_loss = F.cross_entropy(student_logits, labels)
    return alpha * soft_targets_loss + (1 - alpha) * hard_loss


def test_distillation_loss_equals_the_notes_formula_on_one_row_per_example():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(10, (8,), generator=g)
    assert C.distillation_loss(s, t, y) == pytest.approx(seed_loss(s, t, y).item(), rel=1e-6)


def test_distillation_loss_averages_over_tokens_not_sequences():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 6, 10, generator=g), torch.randn(2, 6, 10, generator=g)
    y = torch.randint(10, (2, 6), generator=g)
    flat = seed_loss(s.reshape(-1, 10), t.reshape(-1, 10), y.reshape(-1))
    assert C.distillation_loss(s, t, y) == pytest.approx(flat.item(), rel=1e-6)
    # the pitfall: batchmean on [batch, seq, vocab] divides by the batch only (x seq_len)
    kl_3d = F.kl_div(F.log_softmax(s / 2, -1), F.softmax(t / 2, -1), reduction="batchmean")
    kl_2d = F.kl_div(F.log_softmax(s.reshape(-1, 10) / 2, -1), F.softmax(t.reshape(-1, 10) / 2, -1),
                     reduction="batchmean")
    assert kl_3d.item() == pytest.approx(6 * kl_2d.item(), rel=1e-5)


def test_distillation_loss_ignores_padding_labels():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(1, 4, 10, generator=g), torch.randn(1, 4, 10, generator=g)
    y = torch.tensor([[3, 1, -100, -100]])
    expected = seed_loss(s[0, :2], t[0, :2], y[0, :2])
    assert C.distillation_loss(s, t, y) == pytest.approx(expected.item(), rel=1e-6)


def test_distillation_beats_plain_training_on_few_examples():
    x_big, y_big, _ = C.synthetic_task(4000, seed=0)
    teacher = C.mlp(20, 64, 10, seed=0)
    C.train_classifier(teacher, x_big, y_big, steps=400, batch_size=128)
    x_test, _, y_test = C.synthetic_task(2000, seed=9)
    x, y, _ = C.synthetic_task(200, seed=1)
    with torch.no_grad():
        soft = teacher(x)
    plain = C.mlp(20, 32, 10, seed=1)
    student = C.mlp(20, 32, 10, seed=1)
    C.train_classifier(plain, x, y, steps=300)
    losses = C.train_classifier(student, x, y, soft, steps=300)
    assert len(losses) == 300 and losses[-1] < losses[0]
    assert C.accuracy(student, x_test, y_test) > C.accuracy(plain, x_test, y_test)
    assert C.n_parameters(student) < C.n_parameters(teacher)


def test_synthetic_task_is_reproducible():
    a, b = C.synthetic_task(50, seed=3), C.synthetic_task(50, seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    x, noisy, true = a
    assert x.shape == (50, 20) and 0 < (noisy != true).float().mean() < 0.5


def test_n_m_pruning_keeps_the_largest_two_of_every_four():
    row = torch.tensor([0.9, -0.8, 0.7, 0.6, 0.05, -0.1, 0.2, -0.15])
    C.prune_n_m_(row)
    assert row.tolist() == pytest.approx([0.9, -0.8, 0, 0, 0, 0, 0.2, -0.15])
    assert C.follows_n_m(row) and not C.follows_n_m(torch.ones(8))
    with pytest.raises(ValueError, match="múltiplo"):
        C.prune_n_m_(torch.ones(6))
    with pytest.raises(ValueError):
        C.prune_n_m_(torch.ones(8), n=4, m=4)


def test_semi_structured_pruning_of_a_model_is_half_zeros_in_the_pattern():
    model = TinyLM()
    embed_before = model.embed.weight.clone()
    C.semi_structured_prune(model)
    assert C.sparsity(model) == pytest.approx(0.5)
    assert all(C.follows_n_m(m.weight) for _, m in C.prunable_linears(model))
    assert torch.equal(model.embed.weight, embed_before)  # the tied head is skipped
    unstructured = TinyLM()
    C.magnitude_prune(unstructured, 0.5)
    assert not all(C.follows_n_m(m.weight) for _, m in C.prunable_linears(unstructured))


def test_distillation_experiment_runs_both_students_on_the_same_data():
    run = C.distillation_experiment(0.3, sizes=(50, 100), teacher_examples=500, test_examples=200,
                                    teacher_steps=20, student_steps=10)
    assert [r["ejemplos"] for r in run.rows] == [50, 100]
    assert all(0 <= r["solo etiquetas"] <= 1 and 0 <= r["destilado"] <= 1 for r in run.rows)
    assert run.teacher_parameters > 10 * run.student_parameters > 0
    again = C.distillation_experiment(0.3, sizes=(50,), teacher_examples=500, test_examples=200,
                                      teacher_steps=20, student_steps=10)
    assert again.rows[0] == run.rows[0]  # seeded: the same run twice
    clean_x, noisy, clean = C.synthetic_task(1000, seed=3, label_noise=0.0)
    assert torch.equal(noisy, clean)
