"""The epoch order of class weights applied by sampling (compression.distill.sampling)."""

from __future__ import annotations

import pytest
import torch

from compression.distill.sampling import class_weighted_order


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shares_follow_weight_times_count_and_every_upweighted_sample_appears() -> None:
    classes = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    order = class_weighted_order(classes, torch.tensor([1.0, 2.0, 6.0]), _generator())
    assert order.numel() == 1000
    # masses 600, 600, 600: a third each (largest remainder gives the extra slot to the lowest class index)
    assert torch.bincount(classes[order]).tolist() == [334, 333, 333]
    assert set(order[classes[order] == 2].tolist()) == set(range(900, 1000))  # all 100, 3 or 4 times each
    assert torch.bincount(order, minlength=1000)[900:].min() == 3
    assert len(set(order[classes[order] == 0].tolist())) == 334  # down-weighted: distinct samples


def test_equal_weights_give_a_permutation_and_the_order_is_seeded() -> None:
    classes = torch.randint(0, 4, (257,), generator=_generator(5))
    order = class_weighted_order(classes, torch.ones(4), _generator(1))
    assert sorted(order.tolist()) == list(range(257))
    assert torch.equal(order, class_weighted_order(classes, torch.ones(4), _generator(1)))
    assert not torch.equal(order, class_weighted_order(classes, torch.ones(4), _generator(2)))


def test_a_zero_weight_class_is_never_drawn() -> None:
    classes = torch.tensor([0, 0, 1, 1, 2])
    order = class_weighted_order(classes, torch.tensor([1.0, 0.0, 1.0]), _generator())
    assert 1 not in classes[order].tolist() and order.numel() == 5


@pytest.mark.parametrize(
    ("classes", "weights", "message"),
    [
        (torch.tensor([], dtype=torch.long), torch.ones(2), "non-empty"),
        (torch.tensor([0, 3]), torch.ones(2), "index"),
        (torch.tensor([0, 1]), torch.tensor([1.0, -1.0]), "non-negative"),
        (torch.tensor([0, 1]), torch.tensor([1.0, float("nan")]), "finite"),
        (torch.tensor([0, 0]), torch.tensor([0.0, 1.0]), "positive weight"),
    ],
)
def test_bad_input_is_a_value_error(classes, weights, message) -> None:
    with pytest.raises(ValueError, match=message):
        class_weighted_order(classes, weights, _generator())
