"""DFND's noise adaptation matrix (Chen et al., CVPR 2021): shape, stochasticity, and that it learns the noise."""

from __future__ import annotations

import pytest
import torch

from compression import create_student
from compression.distill import TransferSet, default_config, distill
from compression.distill.noise_adaptation import NoiseAdaptation, dfnd_loss
from compression.teachers import Teacher
from tests.fashion_mnist import TASK_CLASSES, task_images


def test_matrix_is_row_stochastic_and_starts_near_identity() -> None:
    adaptation = NoiseAdaptation(5, confidence=0.9)
    matrix = adaptation.matrix
    torch.testing.assert_close(matrix.sum(dim=1), torch.ones(5))
    torch.testing.assert_close(matrix.diagonal(), torch.full((5,), 0.9))
    logits = torch.randn(8, 5)
    noisy = adaptation(logits).exp()
    torch.testing.assert_close(noisy.sum(dim=1), torch.ones(8))


def test_the_matrix_learns_a_systematic_label_flip() -> None:
    """A perfect student (clean classes known), teacher labels that flip class 0 to class 1 half of the time: the
    adaptation layer must learn Q[0, 1] near 0.5 while the student stays fixed."""
    torch.manual_seed(0)
    clean = torch.arange(4).repeat(500)
    student_logits = torch.nn.functional.one_hot(clean, 4).float() * 20
    noisy = clean.clone()
    zeros = torch.nonzero(clean == 0).flatten()
    noisy[zeros[: len(zeros) // 2]] = 1
    teacher_logits = torch.nn.functional.one_hot(noisy, 4).float() * 20
    adaptation = NoiseAdaptation(4)
    optimiser = torch.optim.Adam(adaptation.parameters(), lr=0.05)
    for _ in range(300):
        loss = dfnd_loss(student_logits, teacher_logits, adaptation, noisy_weight=1.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    matrix = adaptation.matrix.detach()
    assert abs(float(matrix[0, 1]) - 0.5) < 0.05 and float(matrix[2, 2]) > 0.95


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        NoiseAdaptation(1)
    with pytest.raises(ValueError, match="confidence"):
        NoiseAdaptation(3, confidence=1.0)
    with pytest.raises(ValueError, match="student_logits"):
        NoiseAdaptation(3)(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="shapes"):
        dfnd_loss(torch.zeros(2, 3), torch.zeros(2, 4), NoiseAdaptation(3))


def test_distill_with_noise_adaptation_learns_with_the_student(trained_teacher: Teacher) -> None:
    """The trainer's optional DFND term: the student trains on unlabelled images with KD plus the noise-adapted
    hard-label loss, and ends well above chance; a negative weight is refused."""
    teacher = trained_teacher
    images, _ = task_images("train", 600)
    student = create_student("ghost", num_classes=TASK_CLASSES, input_shape=(1, 28, 28), width=0.25)
    config = default_config(
        "ghost", epochs=3, batch_size=16, num_threads=1, checkpoint_every_s=None, augment=False,
        noise_adaptation_weight=1.0,
    )  # fmt: skip
    result = distill(teacher, student, TransferSet(images, None), None, config)
    assert result.best_epoch is not None
    student.eval()
    with torch.no_grad():
        agreement = (student(images).argmax(1) == teacher(images).argmax(1)).float().mean()
    assert float(agreement) > 0.5  # chance is 0.2
    with pytest.raises(ValueError, match="noise_adaptation_weight"):
        default_config("ghost", noise_adaptation_weight=-1.0)
