"""Argument checks shared by the conv-like layers (ValueError/TypeError with the argument's name)."""

from __future__ import annotations

IntOrPair = int | tuple[int, int]


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def int_pair(name: str, value: object, *, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints as ``(height, width)``, each at least ``minimum``."""
    if isinstance(value, int) and not isinstance(value, bool):
        items: tuple[object, ...] = (value, value)
    elif isinstance(value, tuple | list) and len(value) == 2:
        items = tuple(value)
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    pair: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if item < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        pair.append(int(item))
    return (pair[0], pair[1])


def conv2d_pair(values: tuple[int, ...]) -> tuple[int, int]:
    """One of an ``nn.Conv2d``'s ``kernel_size`` / ``stride`` / ``padding`` / ``dilation`` (always two ints, typed
    ``tuple[int, ...]`` by torch) as the ``(height, width)`` pair the layers here take."""
    height, width = values
    return height, width
