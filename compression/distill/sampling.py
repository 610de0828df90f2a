"""The order of an epoch when class weights act by sampling (``DistillConfig.class_weighting = "sampling"``).

Robust KD (PU compression, arXiv:1909.09757) weights each transfer sample by a class weight ``w_c`` estimated from
the teacher's predictions. Multiplying the loss by ``w_c`` is one way to apply it; drawing samples in proportion to
``w_c`` is another with the same expected objective and, when the weights are far apart, a much smaller gradient
variance: a class cut to a tenth appears in a batch of 128 about 25 times at weight 1 instead of about 2.5 times at
weight 10. Sampling is the usual alternative to loss re-weighting for class imbalance (e.g. the class-balanced
sampling compared by Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020,
arXiv:1910.09217).

:func:`class_weighted_order` draws the epoch's ``N`` slots as a stratified sample rather than ``N`` independent
draws: class ``k`` gets ``n_k`` slots, ``n_k`` the largest-remainder rounding of ``N * q_k`` with
``q_k ∝ w_k * N_k`` (``N_k`` samples of class ``k``); a class with ``n_k <= N_k`` contributes ``n_k`` distinct
samples, a class with more slots than samples contributes every sample ``n_k // N_k`` times plus ``n_k % N_k``
distinct others. So every sample of an up-weighted class is seen at least once per epoch, and with equal weights
the order is a plain permutation of the transfer set.
"""

from __future__ import annotations

import torch

__all__ = ["class_weighted_order"]


def class_weighted_order(
    sample_classes: torch.Tensor, class_weights: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """A shuffled epoch order (``[N]`` sample indices) with each class's share proportional to ``w_k * N_k``.

    ``sample_classes`` is ``[N]`` (ints in ``[0, K)``), ``class_weights`` ``[K]`` non-negative with a positive
    weight on some class that has samples. Deterministic given ``generator``'s state.
    """
    if sample_classes.dim() != 1 or sample_classes.numel() == 0:
        raise ValueError(f"sample_classes must be a non-empty [N] tensor, got {tuple(sample_classes.shape)}")
    classes = sample_classes.long()
    weights = class_weights.detach().double().cpu()
    if weights.dim() != 1 or int(classes.min()) < 0 or int(classes.max()) >= weights.numel():
        raise ValueError("sample_classes must index class_weights ([K])")
    if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
        raise ValueError("class weights must be finite and non-negative")
    total = classes.numel()
    counts = torch.bincount(classes, minlength=weights.numel()).double()
    mass = weights * counts
    if float(mass.sum()) <= 0:
        raise ValueError("no class with samples has a positive weight")
    exact = mass / mass.sum() * total
    slots = exact.floor().long()
    remainders = (exact - slots).numpy()
    # Largest remainders first; ties broken by class index (stable) so the result does not depend on float noise.
    order_of_remainders = sorted(range(len(remainders)), key=lambda k: (-remainders[k], k))
    for k in order_of_remainders[: total - int(slots.sum())]:
        slots[k] += 1
    chosen = []
    for k in range(weights.numel()):
        if int(slots[k]) == 0:
            continue
        members = (classes == k).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        repeats, extra = divmod(int(slots[k]), members.numel())
        chosen.append(members.repeat(repeats))
        chosen.append(members[:extra])
    drawn = torch.cat(chosen)
    return drawn[torch.randperm(drawn.numel(), generator=generator)]
