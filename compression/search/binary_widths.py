"""Binary channel search: per-stage widths of a binary ResNet chosen by an evolutionary search under a budget.

Shen, Han, Wang, Liu et al., "Searching for Accurate Binary Neural Architectures", arXiv:1909.07378: binary
networks lose accuracy through the weak expressiveness of 1-bit weights and activations, and widening the channels
recovers much of it; the number of channels of each layer is encoded as the search space and optimised with an
evolutionary algorithm, at an acceptable increase of size and computation. Here the search space is the three stage
widths of the family's CIFAR ResNet (:class:`~compression.students.resnet.CifarResNet`, ``stage_widths``), the
budget a :class:`BinaryBudget` and the fitness a cheap proxy: a short distillation run on a subset of the transfer
set, scored by top-1 agreement with the teacher on held-out images of the same set.

Costs (one sample, :func:`binary_cost`): ``ops = multiplications + binary_ops / 64`` -- the usual way binary-network
papers put 1-bit XNOR-popcount operations on the scale of float operations (64 per 64-bit word), as in Bi-Real Net
(Liu et al., ECCV 2018, arXiv:1808.00278); ``bytes`` = the deployed weight storage
(:func:`compression.metrics.ops.weight_bytes`, 1 bit per binary weight); ``macs`` = all MAC positions (what
training on a CPU pays for).

Algorithm (:func:`search_binary_widths`): the population starts with the default student (its widths fitted to
the MAC budget, :func:`~compression.students.fit_width`) and random mutations of it; each generation keeps the best
half by proxy score and refills the population with mutations (each stage width scaled by a factor from
:data:`MUTATION_FACTORS`, rounded to a multiple of 8) and crossovers (each stage width from either parent) of the
kept ones; stage widths stay non-decreasing, as the zero-pad shortcuts need. Candidates over the budget are
rejected before they are trained. Results are cached per teacher shape (the teacher's parameter names and shapes,
not its values), input shape, class count, budget and search settings, in ``$CONDENSE_SEARCH_CACHE`` or
``~/.cache/condense/binary_search`` (JSON files).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compression.files import atomic_write_text
from compression.metrics.ops import count_ops, weight_bytes
from compression.students._registry import resolve_student
from compression.students.factory import Budget, fit_width
from compression.students.resnet import CifarResNet

__all__ = [
    "MUTATION_FACTORS",
    "BinaryBudget",
    "BinaryCost",
    "SearchResult",
    "binary_cost",
    "create_searched_student",
    "search_binary_widths",
]

MUTATION_FACTORS = (0.75, 0.875, 1.0, 1.25, 1.5)
"""Factors a mutation applies to one stage width (then rounded to a multiple of 8)."""
_WIDTH_STEP = 8
_MAX_ATTEMPTS = 200


@dataclass(frozen=True)
class BinaryCost:
    """Cost of one sample's forward pass and of the deployed weights."""

    ops: int
    """``multiplications + binary_ops / 64`` (rounded up)."""
    bytes: int
    macs: int


@dataclass(frozen=True)
class BinaryBudget:
    """Upper bounds on :class:`BinaryCost` (``max_macs`` None: no bound on MACs)."""

    max_ops: int
    max_bytes: int
    max_macs: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_ops", "max_bytes", "max_macs"):
            value = getattr(self, name)
            if value is None and name == "max_macs":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")

    def allows(self, cost: BinaryCost) -> bool:
        return (
            cost.ops <= self.max_ops
            and cost.bytes <= self.max_bytes
            and (self.max_macs is None or cost.macs <= self.max_macs)
        )

    @classmethod
    def around(cls, cost: BinaryCost, ops_ratio: float = 1.5, bytes_ratio: float = 1.5, macs_ratio: float = 1.5):
        """A budget of the given ratios of ``cost`` (e.g. the default binary student's): the paper accepts an
        increase of size and computation for accuracy."""
        for name, ratio in (("ops_ratio", ops_ratio), ("bytes_ratio", bytes_ratio), ("macs_ratio", macs_ratio)):
            if (
                isinstance(ratio, bool)
                or not isinstance(ratio, int | float)
                or not (ratio > 0 and math.isfinite(ratio))
            ):
                raise ValueError(f"{name} must be a positive number, got {ratio!r}")
        return cls(
            math.floor(cost.ops * ops_ratio), math.floor(cost.bytes * bytes_ratio), math.floor(cost.macs * macs_ratio)
        )


@dataclass
class SearchResult:
    """The chosen widths, their cost and proxy score, and what the search cost."""

    architecture: str
    stage_widths: tuple[int, int, int]
    cost: BinaryCost
    proxy_score: float
    default_widths: tuple[int, int, int]
    default_cost: BinaryCost
    default_score: float
    budget: BinaryBudget
    candidates_trained: int
    search_s: float
    """Wall seconds of the search (0 is never reported for a cached result: it keeps the original search's)."""
    cached: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    """Every trained candidate: ``{"generation", "stage_widths", "score", "ops", "bytes", "macs"}``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchResult:
        values = dict(values)
        for name in ("cost", "default_cost"):
            values[name] = BinaryCost(**values[name])
        values["budget"] = BinaryBudget(**values["budget"])
        for name in ("stage_widths", "default_widths"):
            values[name] = tuple(values[name])
        return cls(**values)


def binary_cost(model: nn.Module, input_shape: tuple[int, int, int]) -> BinaryCost:
    """:class:`BinaryCost` of ``model`` (see the module docstring)."""
    counts = count_ops(model, input_shape).total
    return BinaryCost(
        ops=counts.multiplications + math.ceil(counts.binary_ops / 64), bytes=weight_bytes(model), macs=counts.macs
    )


def create_searched_student(
    result: SearchResult | tuple[int, int, int], num_classes: int, input_shape: tuple[int, int, int], **kwargs: Any
) -> nn.Module:
    """The student with a search's widths (a :class:`SearchResult` or the three stage widths)."""
    architecture = result.architecture if isinstance(result, SearchResult) else "binary_resnet20"
    widths = result.stage_widths if isinstance(result, SearchResult) else tuple(result)
    info = resolve_student(architecture)
    return info.constructor(num_classes=num_classes, input_shape=input_shape, stage_widths=tuple(widths), **kwargs)


ProxyScore = Callable[[nn.Module], float]


def search_binary_widths(
    teacher: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    num_classes: int,
    mac_budget: Budget,
    budget: BinaryBudget | None = None,
    *,
    architecture: str = "binary_resnet20",
    population: int = 6,
    generations: int = 2,
    proxy_images: int = 2000,
    proxy_val_images: int = 1000,
    proxy_epochs: int = 1,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    proxy: ProxyScore | None = None,
) -> SearchResult:
    """Search the stage widths of ``architecture`` (a binary CIFAR ResNet) for distilling ``teacher``.

    ``images``: the transfer set's images ``[N, C, H, W]`` in [0, 1] (the first ``proxy_images`` train the proxy
    runs, the next ``proxy_val_images`` score them). ``mac_budget``: the budget the default student is fitted to;
    ``budget`` (default: :meth:`BinaryBudget.around` the default student's cost, 1.5x) bounds every candidate.
    ``proxy`` replaces the default proxy (a ``proxy_epochs`` KD run, scored by agreement with the teacher).
    Cached per teacher shape (see the module docstring); ``cache_dir=None`` uses the default folder.
    """
    info = resolve_student(architecture)
    if info.family != "binary" or not architecture.startswith("binary_resnet"):
        raise ValueError(f"the channel search works on the binary ResNets (binary_resnet20, ...), got {architecture!r}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise TypeError("images must be a tensor [N, C, H, W]")
    for name, value, minimum in (("population", population, 2), ("generations", generations, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    image_channels, image_height, image_width = (int(size) for size in images.shape[1:])
    input_shape = (image_channels, image_height, image_width)
    started = time.perf_counter()
    default_width = fit_width(architecture, mac_budget, num_classes, input_shape)
    default_model = info.constructor(num_classes=num_classes, input_shape=input_shape, width=default_width)
    default_widths = _stage_widths(default_model)
    default_cost = binary_cost(default_model, input_shape)
    budget = budget if budget is not None else BinaryBudget.around(default_cost)
    if not isinstance(budget, BinaryBudget):
        raise TypeError(f"budget must be a BinaryBudget, got {type(budget).__name__}")
    settings = {
        "architecture": architecture,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "mac_budget": [mac_budget.reference, mac_budget.ratio, mac_budget.metric],
        "budget": asdict(budget),
        "population": population,
        "generations": generations,
        "proxy": [proxy_images, proxy_val_images, proxy_epochs, seed, None if proxy is None else repr(proxy)],
        "teacher": _teacher_signature(teacher),
    }
    cache_file = _cache_folder(cache_dir) / f"{hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:20]}.json"
    if proxy is None and cache_file.exists():
        result = SearchResult.from_dict(json.loads(cache_file.read_text(encoding="utf-8")))
        result.cached = True
        return result

    def build(widths: tuple[int, int, int]) -> nn.Module:
        return info.constructor(num_classes=num_classes, input_shape=input_shape, stage_widths=widths)

    score = (
        proxy
        if proxy is not None
        else _distillation_proxy(teacher, images, proxy_images, proxy_val_images, proxy_epochs, seed)
    )
    rng = random.Random(seed)
    costs: dict[tuple[int, int, int], BinaryCost] = {default_widths: default_cost}
    scores: dict[tuple[int, int, int], float] = {}
    history: list[dict[str, Any]] = []

    def cost_of(widths: tuple[int, int, int]) -> BinaryCost:
        if widths not in costs:
            costs[widths] = binary_cost(build(widths), input_shape)
        return costs[widths]

    def evaluate(widths: tuple[int, int, int], generation: int) -> None:
        if widths in scores:
            return
        torch.manual_seed(seed)
        scores[widths] = float(score(build(widths)))
        cost = cost_of(widths)
        history.append(
            {"generation": generation, "stage_widths": list(widths), "score": scores[widths], **asdict(cost)}
        )

    def offspring(parents: list[tuple[int, int, int]], count: int) -> list[tuple[int, int, int]]:
        children: list[tuple[int, int, int]] = []
        for _ in range(_MAX_ATTEMPTS):
            if len(children) >= count:
                break
            first = rng.choice(parents)
            if len(parents) > 1 and rng.random() < 0.5:
                second = rng.choice(parents)
                child = _mutate(tuple(rng.choice(pair) for pair in zip(first, second, strict=True)), rng, stages=1)
            else:
                child = _mutate(first, rng, stages=rng.randint(1, 3))
            if child in scores or child in children or not budget.allows(cost_of(child)):
                continue
            children.append(child)
        return children

    candidates = [default_widths] if budget.allows(default_cost) else []
    candidates += offspring([default_widths], population - len(candidates))
    for generation in range(generations):
        for widths in candidates:
            evaluate(widths, generation)
        ranked = sorted(scores, key=lambda widths: (-scores[widths], costs[widths].ops))
        parents = ranked[: max(1, population // 2)]
        if generation + 1 < generations:
            candidates = offspring(parents, population - len(parents))
    if not scores:
        raise ValueError(f"no candidate within the budget {budget} (the default student costs {default_cost})")
    best = max(scores, key=lambda widths: (scores[widths], -costs[widths].ops))
    result = SearchResult(
        architecture=architecture,
        stage_widths=best,
        cost=costs[best],
        proxy_score=scores[best],
        default_widths=default_widths,
        default_cost=default_cost,
        default_score=scores.get(default_widths, float("nan")),
        budget=budget,
        candidates_trained=len(scores),
        search_s=round(time.perf_counter() - started, 1),
        history=history,
    )
    if proxy is None:
        atomic_write_text(cache_file, json.dumps(result.to_dict()))
    return result


def _stage_widths(model: nn.Module) -> tuple[int, int, int]:
    if not isinstance(model, CifarResNet):
        raise TypeError(f"expected a CifarResNet, got {type(model).__name__}")
    return model.stage_widths


def _mutate(widths: tuple[int, ...], rng: random.Random, stages: int) -> tuple[int, int, int]:
    chosen = set(rng.sample(range(3), stages))
    mutated = []
    for index, width in enumerate(widths):
        if index in chosen:
            width = max(_WIDTH_STEP, round(width * rng.choice(MUTATION_FACTORS) / _WIDTH_STEP) * _WIDTH_STEP)
        mutated.append(int(width))
    for index in range(1, len(mutated)):  # the zero-pad shortcuts need non-decreasing stage widths
        mutated[index] = max(mutated[index], mutated[index - 1])
    return tuple(mutated)  # type: ignore[return-value]


def _distillation_proxy(
    teacher: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    train_images: int,
    val_images: int,
    epochs: int,
    seed: int,
) -> ProxyScore:
    """Fitness: agreement with the teacher after ``epochs`` of the binary family's default KD on a subset."""
    from compression.distill import TransferSet, default_config, distill, predict_logits

    if len(images) < train_images + val_images:
        train_images = max(2, len(images) * 2 // 3)
        val_images = len(images) - train_images
        if val_images < 1:
            raise ValueError("the channel search needs at least 3 images")
    subset = images[: train_images + val_images]
    logits = predict_logits(teacher, subset)
    train = TransferSet(subset[:train_images], None, logits[:train_images])
    val = TransferSet(subset[train_images:], None, logits[train_images:])
    config = default_config("binary", epochs=epochs, batch_size=64, checkpoint_every_s=None, seed=seed)

    def score(student: nn.Module) -> float:
        result = distill(teacher, student, train, val, config)
        return float(result.best_metric or 0.0)

    return score


def _teacher_signature(teacher: Any) -> list[Any]:
    """The teacher's shape: its parameters' names and shapes (not their values), or what a loaded teacher tells."""
    if isinstance(teacher, nn.Module):
        return [type(teacher).__name__] + [[name, list(p.shape)] for name, p in teacher.named_parameters()]
    described = [
        type(teacher).__name__,
        str(getattr(teacher, "format", "")),
        list(getattr(teacher, "input_shape", ()) or ()),
        getattr(teacher, "num_classes", None),
        getattr(teacher, "parameter_count", None),
    ]
    inner = getattr(teacher, "module", None)
    if isinstance(inner, nn.Module):
        described += _teacher_signature(inner)
    return described


def _cache_folder(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("CONDENSE_SEARCH_CACHE"):
        return Path(os.environ["CONDENSE_SEARCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "condense" / "binary_search"
