"""What a teacher expects as input, and how raw images are brought to it.

Every teacher is fed *raw* images: float tensors ``(N, C, H, W)`` with pixel values in ``[0, 1]``.
:func:`adapt_images` brings them to the teacher's own ``(C, H, W)`` -- resizing (bilinear with
antialiasing) and converting channels (grey to RGB by repeating the channel, RGB to grey with the
ITU-R BT.601 luminance weights 0.299 / 0.587 / 0.114) -- and :class:`InputSpec` then normalises them
per channel, ``(x - mean) / std``, exactly as the teacher was trained.

Normalisation defaults to ``mean = 0`` and ``std = 1`` for every channel, i.e. the model sees raw
``[0, 1]`` pixels. A model can carry its own normalisation (read by :func:`compression.load_teacher`):

- ONNX: ``metadata_props`` entries :data:`ONNX_MEAN_KEY` (``"condense.mean"``) and
  :data:`ONNX_STD_KEY` (``"condense.std"``), each a JSON list with one number per channel, e.g.
  ``onnx.helper.set_model_props(proto, {"condense.mean": "[0.485, 0.456, 0.406]", ...})``;
- TorchScript: module attributes :data:`TORCHSCRIPT_MEAN_ATTRIBUTE` (``condense_mean``) and
  :data:`TORCHSCRIPT_STD_ATTRIBUTE` (``condense_std``), lists of floats (or 1-D tensors) set on the
  module before ``torch.jit.script`` / ``torch.jit.save``.

Values passed to ``load_teacher(mean=..., std=...)`` take precedence over the model's own; each of
mean and std is resolved separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "LUMINANCE_WEIGHTS",
    "ONNX_MEAN_KEY",
    "ONNX_STD_KEY",
    "PIXEL_RANGE_SLACK",
    "TORCHSCRIPT_MEAN_ATTRIBUTE",
    "TORCHSCRIPT_STD_ATTRIBUTE",
    "InputSpec",
    "adapt_images",
    "as_float_tuple",
    "check_input_shape",
    "check_pixel_range",
]

ONNX_MEAN_KEY = "condense.mean"
ONNX_STD_KEY = "condense.std"
TORCHSCRIPT_MEAN_ATTRIBUTE = "condense_mean"
TORCHSCRIPT_STD_ATTRIBUTE = "condense_std"

#: RGB -> grey weights (ITU-R BT.601 luma), the ones PIL's ``convert("L")`` uses.
LUMINANCE_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

#: How far outside ``[0, 1]`` raw pixels may stray before :func:`check_pixel_range` calls the input
#: mis-scaled. Generous on purpose: augmentations overshoot a little, while 0-255 pixels or inputs
#: that were already normalised with ImageNet statistics (about -2.1 to 2.6) overshoot a lot.
PIXEL_RANGE_SLACK = 0.5


def check_input_shape(input_shape: object, what: str = "input_shape") -> tuple[int, int, int]:
    """``input_shape`` as a ``(C, H, W)`` tuple of positive ints; TypeError / ValueError otherwise."""
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str | bytes):
        raise TypeError(f"{what} must be a sequence (C, H, W) of three ints, got {type(input_shape).__name__}")
    values = tuple(input_shape)
    if len(values) != 3:
        raise ValueError(f"{what} must have three entries (C, H, W), got {len(values)}: {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what} entries must be ints, got {values!r}")
        if value < 1:
            raise ValueError(f"{what} entries must be >= 1, got {values!r}")
    return (values[0], values[1], values[2])


def as_float_tuple(values: object, what: str) -> tuple[float, ...]:
    """``values`` (a sequence of numbers or a 0/1-d tensor) as a tuple of finite floats; TypeError / ValueError
    naming ``what`` otherwise."""
    if isinstance(values, torch.Tensor):
        if values.ndim > 1:
            raise ValueError(f"{what} must be one number per channel, got a tensor of shape {tuple(values.shape)}")
        values = values.reshape(-1).tolist()
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise TypeError(f"{what} must be a sequence of numbers (one per channel), got {type(values).__name__}")
    result = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{what} must contain numbers only, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{what} must contain finite numbers only, got {value!r}")
        result.append(float(value))
    return tuple(result)


@dataclass(frozen=True)
class InputSpec:
    """A teacher's input: its ``(C, H, W)`` and per-channel normalisation ``(x - mean) / std``.

    ``mean`` / ``std`` left as ``None`` default to 0 / 1 for every channel (raw ``[0, 1]`` pixels);
    after construction both are always tuples of ``C`` floats. ``std`` entries must be > 0.
    """

    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        shape = check_input_shape(self.input_shape)
        channels = shape[0]
        mean = (0.0,) * channels if self.mean is None else as_float_tuple(self.mean, "mean")
        std = (1.0,) * channels if self.std is None else as_float_tuple(self.std, "std")
        for name, values in (("mean", mean), ("std", std)):
            if len(values) != channels:
                raise ValueError(
                    f"{name} must have one value per input channel ({channels}), got {len(values)}: {list(values)}"
                )
        if any(value <= 0 for value in std):
            raise ValueError(f"std values must be > 0, got {list(std)}")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def channels(self) -> int:
        return self.input_shape[0]

    @property
    def is_identity(self) -> bool:
        """True when normalisation changes nothing (mean 0, std 1 everywhere)."""
        return all(m == 0.0 for m in self.mean or ()) and all(s == 1.0 for s in self.std or ())

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(images - mean) / std`` per channel; ``images`` is ``(N, C, H, W)`` with ``C`` channels."""
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(
                f"expected images of shape (N, {self.channels}, H, W) to normalise, got {tuple(images.shape)}"
            )
        if self.is_identity:
            return images
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``[0, 1]`` images of any supported size / channel count -> the teacher's normalised input."""
        return self.normalize(adapt_images(images, self.input_shape))

    def as_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "mean": list(self.mean or ()), "std": list(self.std or ())}


def _check_images(images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be a floating-point tensor with values in [0, 1], got dtype {images.dtype} "
            "(for 8-bit pixels use images.float() / 255)"
        )
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.numel() == 0:
        raise ValueError(f"images must not be empty, got shape {tuple(images.shape)}")
    return images


def check_pixel_range(images: torch.Tensor, slack: float = PIXEL_RANGE_SLACK) -> None:
    """ValueError when ``images`` are clearly not raw ``[0, 1]`` pixels (or contain NaN / inf)."""
    low, high = torch.aminmax(images.detach())
    low_value, high_value = float(low), float(high)
    if not (math.isfinite(low_value) and math.isfinite(high_value)):
        raise ValueError("images contain NaN or infinite values")
    if low_value < -slack or high_value > 1.0 + slack:
        raise ValueError(
            f"images must be raw pixels in [0, 1], got values in [{low_value:.3g}, {high_value:.3g}] "
            "(0-255 pixels? divide by 255; already normalised? pass the raw images, the teacher normalises itself)"
        )


def _to_grayscale(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMINANCE_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def adapt_images(images: torch.Tensor, input_shape: Sequence[int]) -> torch.Tensor:
    """Bring raw ``(N, C, H, W)`` images to ``input_shape = (C', H', W')``.

    Channels: equal counts are kept, 1 -> 3 repeats the grey channel, 3 -> 1 takes the luminance
    (:data:`LUMINANCE_WEIGHTS`); any other combination is a ValueError (there is no safe guess).
    Size: resized with bilinear interpolation and antialiasing when ``(H, W)`` differ (antialiasing
    only matters when shrinking; it keeps values inside the input's range). Half-precision input is
    computed in float32. The input is never modified; when nothing needs changing it is returned
    as is.
    """
    images = _check_images(images)
    channels, height, width = check_input_shape(input_shape)
    source_channels = images.shape[1]
    if source_channels != channels and (source_channels, channels) not in ((1, 3), (3, 1)):
        raise ValueError(
            f"cannot convert images with {source_channels} channels to the teacher's {channels}: only 1 -> 3 "
            "(grey to RGB) and 3 -> 1 (RGB to grey) are supported"
        )
    if images.dtype not in (torch.float32, torch.float64):
        images = images.float()
    if source_channels == 3 and channels == 1:  # shrink first: resizing one channel is cheaper than three
        images = _to_grayscale(images)
    if tuple(images.shape[-2:]) != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    if source_channels == 1 and channels == 3:
        images = images.repeat(1, 3, 1, 1)
    return images
