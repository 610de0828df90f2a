"""Robust KD losses (compression/distill/losses.py) against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from compression.distill import (
    IGNORE_LABEL,
    ClassLossTracker,
    class_terms,
    class_weighted_loss,
    distillation_loss,
    labelled_cross_entropy,
    teacher_class_weights,
    worst_case_class_factors,
)


def _chi_square(factors: torch.Tensor) -> float:
    """(1/(2P)) * ||u - 1||^2: the chi-square divergence of u/P from the uniform distribution."""
    return float(((factors.double() - 1) ** 2).sum() / (2 * factors.numel()))


# ----------------------------------------------------------------------------------------------- KD and CE


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_distillation_loss_is_scaled_kl_per_sample(temperature: float) -> None:
    student, teacher = torch.randn(6, 5) * 3, torch.randn(6, 5) * 3
    loss = distillation_loss(student, teacher, temperature)
    p = torch.softmax(teacher.double() / temperature, dim=1)
    q = torch.softmax(student.double() / temperature, dim=1)
    expected = temperature**2 * (p * (p / q).log()).sum(dim=1)
    assert loss.shape == (6,)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-5)  # float32 against float64
    # The batch mean is torch's KL divergence (batchmean) times T^2.
    log_q = F.log_softmax(student / temperature, dim=1)
    kl = F.kl_div(log_q, torch.softmax(teacher / temperature, dim=1), reduction="batchmean") * temperature**2
    torch.testing.assert_close(loss.mean(), kl, rtol=1e-5, atol=1e-6)


def test_distillation_loss_is_zero_at_the_teacher_and_does_not_train_it() -> None:
    teacher = torch.randn(4, 3, requires_grad=True)
    assert distillation_loss(teacher.detach().clone(), teacher, 2.0).abs().max() < 1e-6
    student = torch.randn(4, 3, requires_grad=True)
    distillation_loss(student, teacher, 2.0).sum().backward()
    assert teacher.grad is None and student.grad is not None


def test_distillation_loss_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)


def test_labelled_cross_entropy_ignores_unlabelled_samples() -> None:
    logits, labels = torch.randn(5, 4), torch.tensor([0, IGNORE_LABEL, 3, IGNORE_LABEL, 1])
    loss = labelled_cross_entropy(logits, labels)
    assert loss[1] == 0 and loss[3] == 0
    keep = labels != IGNORE_LABEL
    torch.testing.assert_close(loss[keep], F.cross_entropy(logits[keep], labels[keep], reduction="none"))


# ------------------------------------------------------------------------------------------- class weights


def test_teacher_class_weights_follow_the_formula() -> None:
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2]])
    weights = teacher_class_weights(probabilities, floor=1e-6)
    inverse_mass = 1 / probabilities.double().sum(dim=0)
    torch.testing.assert_close(weights.double(), inverse_mass * 3 / inverse_mass.sum(), rtol=1e-6, atol=0)
    assert math.isclose(float(weights.sum()), 3.0, rel_tol=1e-6)


def test_teacher_class_weights_are_larger_for_rarer_predicted_classes() -> None:
    # 60 / 30 / 10 images predicted (confidently) as classes 0 / 1 / 2.
    classes = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    probabilities = F.one_hot(classes, 3).double() * 0.9 + 0.1 / 3
    weights = teacher_class_weights(probabilities)
    assert math.isclose(float(weights.sum()), 3.0, rel_tol=1e-6)
    assert weights[2] > weights[1] > weights[0]
    # Each class's weighted share of the samples is about the same (the point of the weights).
    shares = weights.double() * torch.bincount(classes).double()
    assert float(shares.max() / shares.min()) < 1.6


def test_teacher_class_weights_floor_bounds_a_missing_class() -> None:
    probabilities = torch.zeros(100, 4)
    probabilities[:, :3] = 1 / 3  # class 3 is never predicted
    weights = teacher_class_weights(probabilities, floor=0.1)
    assert torch.isfinite(weights).all() and math.isclose(float(weights.sum()), 4.0, rel_tol=1e-6)
    # Its mass is floored at 0.1 * N / K, i.e. 0.3x the mass (N/3) of each predicted class: at most 1/0.1 = 10x
    # the weight of a class of balanced size N / K.
    assert math.isclose(float(weights[3] / weights[0]), (100 / 3) / (0.1 * 100 / 4), rel_tol=1e-5)
    with pytest.raises(ValueError, match="floor"):
        teacher_class_weights(probabilities, floor=0.0)


# ---------------------------------------------------------------------------------- per-class terms, robust


def test_class_terms_sum_to_the_weighted_mean() -> None:
    losses, classes = torch.rand(10), torch.randint(0, 4, (10,))
    weights = torch.tensor([0.5, 1.0, 1.5, 1.0])
    terms = class_terms(losses, classes, weights)
    torch.testing.assert_close(terms.sum(), (weights[classes] * losses).mean())
    for k in range(4):
        torch.testing.assert_close(terms[k], weights[k] * losses[classes == k].sum() / 10)


@pytest.mark.parametrize("radius", [0.01, 0.1, 0.5, 2.0])
def test_worst_case_factors_are_feasible_and_favour_the_worst_class(radius: float) -> None:
    generator = torch.Generator().manual_seed(int(radius * 100))
    class_losses = torch.rand(6, generator=generator) ** 3
    factors = worst_case_class_factors(class_losses, radius)
    assert factors.min() >= 0
    assert math.isclose(float(factors.mean()), 1.0, abs_tol=1e-6)
    assert _chi_square(factors) <= radius + 1e-6
    worst = int(class_losses.argmax())
    assert int(factors.argmax()) == worst and factors[worst] > 1
    # Larger losses never get smaller factors (the maximiser is monotone in b).
    order = torch.argsort(class_losses)
    assert (factors[order].diff() >= -1e-6).all()
    # The robust loss is at least the nominal one.
    assert float((factors * class_losses).sum()) >= float(class_losses.sum()) - 1e-6


def _maximiser_by_support_enumeration(class_losses: torch.Tensor, radius: float) -> torch.Tensor:
    """An independent solution of the inner max from its KKT conditions, support size by support size.

    On a support S of the top-s classes, u_k = 1 + (b_k - nu) / lam (k in S), 0 elsewhere; sum u = P and a tight
    ball give lam = sqrt(V_S / (2 P rho - P (P - s) / s)) with V_S the spread of b over S. The answer is the s
    whose u is non-negative on S and would be non-positive on the next class.
    """
    b = class_losses.double()
    count = b.numel()
    order = torch.argsort(b, descending=True)
    for size in range(count, 0, -1):
        top = b[order[:size]]
        need = 2 * count * radius - count * (count - size) / size
        spread = float(((top - top.mean()) ** 2).sum())
        if need <= 0 or spread == 0:
            continue
        lam = math.sqrt(spread / need)
        nu = float(top.mean()) - lam * (count - size) / size
        values = 1 + (b - nu) / lam
        inside = values[order[:size]]
        outside = values[order[size:]]
        if inside.min() >= -1e-9 and (outside.numel() == 0 or outside.max() <= 1e-9):
            factors = torch.zeros_like(b)
            factors[order[:size]] = inside
            return factors
    raise AssertionError("no support size satisfies the KKT conditions")


def test_worst_case_factors_match_an_independent_kkt_solution_and_sampled_points() -> None:
    generator = torch.Generator().manual_seed(3)
    for trial in range(20):
        count = 2 + trial % 7
        class_losses = torch.rand(count, generator=generator, dtype=torch.float64) ** 2
        radius = [0.02, 0.1, 0.3, 0.6][trial % 4] * (count - 1) / 2  # up to 60 % of the way to the vertex
        factors = worst_case_class_factors(class_losses, radius).double()
        expected = _maximiser_by_support_enumeration(class_losses, radius)
        torch.testing.assert_close(factors, expected, rtol=1e-5, atol=1e-5)
        # No point of the set sampled at random does better.
        directions = torch.randn(4000, count, generator=generator, dtype=torch.float64)
        directions -= directions.mean(dim=1, keepdim=True)
        scale = torch.rand(4000, 1, generator=generator, dtype=torch.float64) * math.sqrt(2 * count * radius)
        points = 1 + directions / directions.norm(dim=1, keepdim=True) * scale
        points = points[(points >= 0).all(dim=1)]
        assert float((points @ class_losses).max()) <= float(factors @ class_losses) + 1e-6


def test_worst_case_factors_clip_and_reach_the_vertex() -> None:
    class_losses = torch.tensor([0.0, 0.0, 0.1, 1.0])
    clipped = worst_case_class_factors(class_losses, 1.2)  # too far for the unclipped closed form
    assert clipped[0] == 0 and clipped[1] == 0 and clipped[3] > clipped[2] > 0
    assert math.isclose(_chi_square(clipped), 1.2, rel_tol=1e-5)
    # Radius (P - 1) / 2 reaches the vertex: all weight on the worst class.
    vertex = worst_case_class_factors(class_losses, 1.5)
    torch.testing.assert_close(vertex, torch.tensor([0.0, 0.0, 0.0, 4.0]))


def test_worst_case_factors_nominal_cases() -> None:
    class_losses = torch.tensor([0.3, 0.1, 0.2])
    torch.testing.assert_close(worst_case_class_factors(class_losses, 0.0), torch.ones(3))
    torch.testing.assert_close(worst_case_class_factors(torch.full((3,), 0.7), 0.5), torch.ones(3))
    # Classes absent from the batch keep factor 1; the ball is over the present ones.
    present = torch.tensor([True, False, True])
    factors = worst_case_class_factors(class_losses, 0.1, present)
    assert factors[1] == 1 and math.isclose(float(factors[present].mean()), 1.0, rel_tol=1e-6)
    assert factors[0] > 1 > factors[2]
    with pytest.raises(ValueError, match="radius"):
        worst_case_class_factors(class_losses, -0.1)


def test_robust_loss_grows_with_the_radius() -> None:
    class_losses = torch.tensor([0.5, 0.1, 0.3, 0.2])
    values = [float((worst_case_class_factors(class_losses, r) * class_losses).sum()) for r in (0, 0.05, 0.2, 1.0)]
    assert values == sorted(values) and values[0] == pytest.approx(float(class_losses.sum()))


def test_class_weighted_loss_moves_weight_to_the_worst_class_and_bounds_the_nominal_loss() -> None:
    # Class 2 is the student's worst class (largest mean loss) although it is the rarest.
    classes = torch.tensor([0] * 8 + [1] * 6 + [2] * 2)
    per_sample = torch.cat([torch.full((8,), 0.2), torch.full((6,), 0.3), torch.full((2,), 1.5)])
    per_sample = per_sample.requires_grad_()
    nominal_weights = teacher_class_weights(F.one_hot(classes, 3).double())
    nominal = class_weighted_loss(per_sample, classes, nominal_weights)
    robust = class_weighted_loss(per_sample, classes, nominal_weights, robust_radius=0.1)
    assert float(robust.loss.detach()) > float(nominal.loss.detach())
    torch.testing.assert_close(robust.nominal, nominal.loss.detach())
    ratio = robust.class_weights / nominal_weights
    assert int(ratio.argmax()) == 2 and ratio[2] > 1 > ratio[0]
    # Danskin: the gradient is that of the loss at the fixed maximiser, w0[c_i] * u[c_i] / n per sample.
    robust.loss.backward()
    torch.testing.assert_close(per_sample.grad, robust.class_weights[classes] / len(classes))


# ------------------------------------------------------------------------------------ smoothed adversary


def test_class_loss_tracker_keeps_moving_averages_per_class() -> None:
    tracker = ClassLossTracker(torch.tensor([0.5, 0.3, 0.2]), smoothing=0.5)
    tracker.update(torch.tensor([1.0, 1.0, 3.0]), torch.tensor([0, 0, 2]))
    assert tracker.present.tolist() == [True, False, True]  # class 1 not seen yet: the adversary leaves it alone
    torch.testing.assert_close(tracker.means, torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64))
    tracker.update(torch.tensor([3.0, 2.0]), torch.tensor([0, 1]))
    # class 0: 0.5 * 1 + 0.5 * 3; class 1 starts at its first batch mean; class 2 (absent) keeps its average
    torch.testing.assert_close(tracker.means, torch.tensor([2.0, 2.0, 3.0], dtype=torch.float64))
    weights = torch.tensor([1.0, 2.0, 4.0])
    torch.testing.assert_close(tracker.terms(weights), torch.tensor([1.0, 1.2, 2.4], dtype=torch.float64))
    copy = ClassLossTracker(torch.tensor([0.5, 0.3, 0.2]), smoothing=0.5)
    copy.load_state_dict(tracker.state_dict())
    assert torch.equal(copy.means, tracker.means) and torch.equal(copy.seen, tracker.seen)


def test_class_loss_tracker_absent_class_in_transfer_set_is_not_in_the_ball() -> None:
    tracker = ClassLossTracker(torch.tensor([0.6, 0.4, 0.0]), smoothing=0.0)
    tracker.update(torch.tensor([1.0, 2.0, 5.0]), torch.tensor([0, 1, 2]))
    assert tracker.present.tolist() == [True, True, False]


def test_smoothed_adversary_follows_the_running_losses_not_one_batch() -> None:
    # Class 2 has been the worst class for twenty batches; in this batch class 0 happens to look worse.
    shares = torch.tensor([1 / 3, 1 / 3, 1 / 3])
    tracker = ClassLossTracker(shares, smoothing=0.9)
    classes = torch.tensor([0, 0, 1, 1, 2, 2])
    for _ in range(20):
        tracker.update(torch.tensor([1.0, 1.0, 1.0, 1.0, 3.0, 3.0]), classes)
    batch = torch.tensor([1.5, 1.5, 1.0, 1.0, 0.8, 0.8])
    weights = torch.ones(3)
    per_batch = class_weighted_loss(batch, classes, weights, robust_radius=0.1)
    smoothed = class_weighted_loss(batch, classes, weights, robust_radius=0.1, tracker=tracker)
    assert int(per_batch.class_weights.argmax()) == 0
    assert int(smoothed.class_weights.argmax()) == 2
    assert _chi_square(smoothed.class_weights) <= 0.1 + 1e-6 and float(smoothed.class_weights.mean()) == pytest.approx(
        1
    )


@pytest.mark.parametrize(("shares", "smoothing"), [(torch.tensor([0.5, -0.1]), 0.9), (torch.ones(2), 1.0)])
def test_class_loss_tracker_rejects_bad_settings(shares: torch.Tensor, smoothing: float) -> None:
    with pytest.raises(ValueError):
        ClassLossTracker(shares, smoothing)


def test_penalised_worst_case_is_proportional_to_relative_excess_loss() -> None:
    losses = torch.tensor([0.70, 0.46, 0.64, 0.58, 0.66])
    factors = worst_case_class_factors(losses, 0.1, sensitivity=1.0)
    expected = 1.0 + (losses - losses.mean()) / losses.mean()  # inside the ball: no projection needed
    assert torch.allclose(factors, expected, atol=1e-6)
    assert torch.allclose(worst_case_class_factors(losses * 250.0, 0.1, sensitivity=1.0), factors, atol=1e-6)
    half = worst_case_class_factors(losses, 0.1, sensitivity=0.5)
    assert torch.allclose(half - 1.0, (factors - 1.0) / 2, atol=1e-6)
    # the constrained worst case goes to the ball's edge even for these small differences
    edge = worst_case_class_factors(losses, 0.1)
    assert ((edge - 1.0) ** 2).sum() / (2 * 5) == pytest.approx(0.1, rel=1e-5)
    assert ((factors - 1.0) ** 2).sum() / (2 * 5) < 0.02
    assert int(factors.argmax()) == int(edge.argmax()) == 0


def test_penalised_worst_case_is_capped_by_the_ball_and_neutral_when_classes_are_equal() -> None:
    losses = torch.tensor([10.0, 1.0, 1.0, 1.0, 1.0])
    capped = worst_case_class_factors(losses, 0.1, sensitivity=1.0)
    assert torch.allclose(capped, worst_case_class_factors(losses, 0.1), atol=1e-6)
    assert torch.equal(worst_case_class_factors(torch.full((4,), 2.0), 0.1, sensitivity=1.0), torch.ones(4))
    present = torch.tensor([True, True, False])
    partial = worst_case_class_factors(torch.tensor([1.0, 3.0, 100.0]), 0.5, present, sensitivity=0.5)
    assert partial[2] == 1.0 and torch.allclose(partial[:2], torch.tensor([0.75, 1.25]))
    for bad in (0.0, -1.0, math.inf, True):
        with pytest.raises(ValueError, match="sensitivity"):
            worst_case_class_factors(losses, 0.1, sensitivity=bad)
