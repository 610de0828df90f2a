"""The labelled sample a user uploads (the *positives*), brought to the teacher's input and split for validation.

:func:`load_positives` accepts (read by :mod:`pu_mining.image_files`, with all its safety checks):

- a folder with one subfolder per class (images anywhere below a class folder belong to it), or a zip / tar
  archive of one; a single top-level wrapper folder inside (``data/cat/1.png``, ``data/dog/2.png``) is stripped;
- an ``.npz`` with ``x`` (images) and ``y`` (labels 0..K-1 for every image); class names are ``"0"`` .. ``"K-1"``
  unless given.

Class folders are sorted by name (Python string order) unless ``class_names`` is given, which fixes both the
names and their order: the folders must then be exactly those classes. A class without images is an error (a
class folder holding only files that are not images counts). The wrapper rule: when every image lies at least two
folders deep under one single top-level folder, that folder is taken for a wrapper, unless ``class_names`` is
exactly that one folder (a one-class upload with subfolders must say so).

Conversion to the teacher's ``(C, H, W)`` (:func:`fit_image`), applied to each image; what is not safe is refused
with a ValueError naming the file and the reason (or skipped with ``on_error="skip"``):

- channels: grayscale -> RGB repeats the channel; RGB -> grayscale takes the ITU-R BT.601 luma
  (0.299 R + 0.587 G + 0.114 B), exactly as :func:`compression.teachers.preprocessing.adapt_images` does;
- aspect ratio: within a factor :data:`STRETCH_ASPECT` (1.25) of the teacher's, the image is resized as it is
  (stretched a little); up to :data:`MAX_ASPECT_CHANGE` (2.0) it is first centre-cropped to the teacher's aspect
  ratio (as ``Resize`` + ``CenterCrop`` evaluation transforms do; at most half the image is cut); beyond that it is
  refused (a banner is not an object photo, and cropping would discard most of it);
- size: shrinking is always safe (bilinear with antialiasing, like PIL); enlarging at most :data:`MAX_UPSCALE`
  (8) times per side (28x28 MNIST to a 224x224 teacher is exactly 8x); an image that would need more (an 8x8 icon
  for a 224x224 teacher) is refused: its details are not there to recover.

Pixels end as float32 in [0, 1]. :func:`split_holdout` splits a stratified, seeded hold-out set off.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from compression.teachers.preprocessing import adapt_images, check_input_shape
from pu_mining.image_files import OnError, ReadLimits, SkippedMember, is_hidden, iter_images

__all__ = [
    "MAX_ASPECT_CHANGE",
    "MAX_UPSCALE",
    "STRETCH_ASPECT",
    "Positives",
    "array_labels",
    "fit_image",
    "folder_labels",
    "load_positives",
    "split_holdout",
]

MAX_UPSCALE = 8.0
"""Most an image may be enlarged per side to reach the teacher's input size."""
STRETCH_ASPECT = 1.25
"""Aspect-ratio change up to which an image is resized without cropping (stretched)."""
MAX_ASPECT_CHANGE = 2.0
"""Aspect-ratio change up to which an image is centre-cropped to the teacher's aspect ratio; beyond, refused."""


@dataclass(frozen=True, eq=False)
class Positives:
    """Labelled images at the teacher's input: ``images`` float32 ``[N, C, H, W]`` in [0, 1], ``labels`` int64
    ``[N]`` (indices into ``class_names``), ``names`` (member paths, or ``index N`` for arrays), ``source_hash``
    (SHA-256 of the upload: :attr:`pu_mining.image_files.ImageReader.sha256`) and what was ``skipped``."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    names: list[str]
    source_hash: str
    skipped: list[SkippedMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.float32 or self.images.ndim != 4:
            raise ValueError("Positives.images must be a float32 tensor [N, C, H, W]")
        count = self.images.shape[0]
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64:
            raise ValueError("Positives.labels must be an int64 tensor [N]")
        if tuple(self.labels.shape) != (count,) or len(self.names) != count:
            raise ValueError(
                f"Positives: {count} images but labels of shape {tuple(self.labels.shape)} and {len(self.names)} names"
            )
        if count and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise ValueError(f"Positives.labels must be in 0..{len(self.class_names) - 1}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
        return dict(zip(self.class_names, counts, strict=True))


def load_positives(
    path: str | os.PathLike[str],
    input_shape: tuple[int, int, int],
    limits: ReadLimits | None = None,
    class_names: list[str] | None = None,
    on_error: OnError = "raise",
) -> Positives:
    """The labelled images at ``path`` (see the module), converted to the teacher's ``input_shape`` ``(C, H, W)``.

    ValueError naming the file and the reason for anything it cannot use; ``on_error="skip"`` skips (and lists in
    ``skipped``) images that do not decode or cannot be converted safely, and files outside class folders, instead.
    """
    channels, height, width = check_input_shape(input_shape)
    if channels not in (1, 3):
        raise ValueError(f"input_shape must have 1 or 3 channels, got {channels}")
    names_given = _check_class_names(class_names)
    reader = iter_images(path, limits, on_error=on_error)
    if reader.format == "image":
        raise ValueError(
            f"{path}: a single image; positives are a folder (or zip / tar) with one subfolder per class, or an "
            ".npz with 'x' and 'y'"
        )
    if reader.format in ("npy", "idx"):
        raise ValueError(f"{path}: images without labels; send an .npz with 'x' (images) and 'y' (labels)")
    fitted: list[torch.Tensor] = []
    names: list[str] = []
    raw_labels: list[str | int | None] = []
    skipped: list[SkippedMember] = []
    for record in reader:
        try:
            image = fit_image(record.image, (channels, height, width), f"{path}: {record.name}")
        except ValueError as error:
            if on_error == "raise":
                raise
            skipped.append(SkippedMember(record.name, str(error).removeprefix(f"{path}: {record.name}: ")))
            continue
        fitted.append(image)
        names.append(record.name)
        raw_labels.append(record.label)
    skipped = reader.skipped + skipped
    if reader.format == "npz":
        labels, classes = array_labels(path, names, raw_labels, names_given)
        keep = list(range(len(names)))
    else:
        labels, classes, keep, names = folder_labels(path, names, skipped, names_given, on_error)
    if not keep:
        raise ValueError(f"{path}: no image inside a class folder")
    images = torch.stack([fitted[index] for index in keep])
    return Positives(
        images=images,
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=classes,
        names=names,
        source_hash=reader.sha256,
        skipped=skipped,
    )


def _check_class_names(class_names: object) -> list[str] | None:
    if class_names is None:
        return None
    if not isinstance(class_names, Sequence) or isinstance(class_names, str | bytes):
        raise TypeError(f"class_names must be a list of str, got {type(class_names).__name__}")
    names = list(class_names)
    if not names:
        raise ValueError("class_names must not be empty")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"class_names must be strings, got {type(name).__name__}")
        if not name:
            raise ValueError("class_names must not contain empty names")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique, got {names}")
    return names


def array_labels(
    path: object, names: list[str], raw_labels: list[str | int | None], class_names: list[str] | None
) -> tuple[list[int], list[str]]:
    missing = [name for name, label in zip(names, raw_labels, strict=True) if not isinstance(label, int)]
    if missing:
        raise ValueError(
            f"{path}: positives need a label for every image ('y' missing, or -1 at {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            + ")"
        )
    labels = [int(label) for label in raw_labels if isinstance(label, int)]
    count = len(class_names) if class_names is not None else max(labels) + 1
    outside = sorted({label for label in labels if not 0 <= label < count})
    if outside:
        raise ValueError(f"{path}: labels {outside} are outside 0..{count - 1} (there are {count} classes)")
    classes = class_names if class_names is not None else [str(index) for index in range(count)]
    present = set(labels)
    empty = [classes[index] for index in range(count) if index not in present]
    if empty:
        raise ValueError(f"{path}: classes without images: {', '.join(map(repr, empty))}")
    return labels, list(classes)


def folder_labels(
    path: object,
    names: list[str],
    skipped: list[SkippedMember],
    class_names: list[str] | None,
    on_error: OnError,
) -> tuple[list[int], list[str], list[int], list[str]]:
    """Labels from class folders: (labels, class names, indices of the images kept, their names)."""
    parts = [tuple(name.split("/")) for name in names]
    tops = {item[0] for item in parts}
    wrapper = None
    if len(tops) == 1 and all(len(item) >= 3 for item in parts) and class_names != list(tops):
        wrapper = next(iter(tops))
    keep: list[int] = []
    classes_of: list[str] = []
    for index, item in enumerate(parts):
        inner = item[1:] if wrapper is not None else item
        if len(inner) < 2:
            reason = "not inside a class folder (positives: one subfolder per class)"
            if on_error == "raise":
                raise ValueError(f"{path}: {names[index]}: {reason}")
            skipped.append(SkippedMember(names[index], reason))
            continue
        keep.append(index)
        classes_of.append(inner[0])
    found = sorted(set(classes_of))
    empty_folders = set()
    for member in skipped:
        skipped_parts = tuple(part for part in member.name.split("/") if part)
        if wrapper is not None:
            if skipped_parts[:1] != (wrapper,):
                continue
            skipped_parts = skipped_parts[1:]
        if len(skipped_parts) >= 2 and not is_hidden(skipped_parts) and skipped_parts[0] not in found:
            empty_folders.add(skipped_parts[0])
    if class_names is not None:
        unknown = sorted(set(found) - set(class_names))
        if unknown:
            raise ValueError(
                f"{path}: class folders {unknown} are not among the class names {class_names}"
                + (f" (the archive's wrapper folder {wrapper!r} was stripped)" if wrapper else "")
            )
        classes = list(class_names)
    else:
        classes = found
    missing = [name for name in classes if name not in found] + sorted(empty_folders - set(classes))
    if missing:
        raise ValueError(f"{path}: classes without images: {', '.join(map(repr, missing))}")
    index_of = {name: index for index, name in enumerate(classes)}
    return [index_of[name] for name in classes_of], classes, keep, [names[index] for index in keep]


def fit_image(image: np.ndarray, input_shape: tuple[int, int, int], name: str = "image") -> torch.Tensor:
    """``image`` (``uint8`` ``[H, W]`` or ``[H, W, 3]``) as float32 ``[C, H', W']`` in [0, 1] for a teacher of
    ``input_shape``, by the module's rules; ValueError naming ``name`` when the conversion would not be safe."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(f"{name}: expected a uint8 NumPy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: expected an image [H, W] or [H, W, 3], got shape {image.shape}")
    channels, height, width = check_input_shape(input_shape)
    image_height, image_width = image.shape[:2]
    change = (image_width / image_height) / (width / height)
    aspect_change = max(change, 1 / change)
    if aspect_change > MAX_ASPECT_CHANGE:
        raise ValueError(
            f"{name}: a {image_width}x{image_height} image is too far from the teacher's {width}x{height} aspect "
            f"ratio ({aspect_change:.2f} times; at most {MAX_ASPECT_CHANGE:g}: cropping would discard over half of "
            "it)"
        )
    if aspect_change > STRETCH_ASPECT:  # centre crop to the teacher's aspect ratio
        if change > 1:
            crop = max(1, round(image_height * width / height))
            left = (image_width - crop) // 2
            image = image[:, left : left + crop]
        else:
            crop = max(1, round(image_width * height / width))
            top = (image_height - crop) // 2
            image = image[top : top + crop]
    crop_height, crop_width = image.shape[:2]
    upscale = max(height / crop_height, width / crop_width)
    if upscale > MAX_UPSCALE + 1e-9:
        raise ValueError(
            f"{name}: a {image_width}x{image_height} image is too small for the teacher's {width}x{height} input "
            f"(it would be enlarged {upscale:.1f} times; at most {MAX_UPSCALE:g})"
        )
    pixels = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).unsqueeze(0).div_(255.0)
    return adapt_images(pixels, (channels, height, width))[0].clamp_(0.0, 1.0).contiguous()


def split_holdout(positives: Positives, fraction: float, seed: int) -> tuple[Positives, Positives]:
    """``(kept, held_out)``: ``round(fraction * n)`` random images of each class of ``n`` held out, but always at
    least one kept per class; both keep the original order. Deterministic for a given ``seed``."""
    if not isinstance(positives, Positives):
        raise TypeError(f"positives must be Positives, got {type(positives).__name__}")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(f"fraction must be a number, got {type(fraction).__name__}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    generator = np.random.default_rng(seed)
    labels = positives.labels.numpy()
    held: list[np.ndarray] = []
    for label in range(len(positives.class_names)):
        members = np.flatnonzero(labels == label)
        count = min(len(members) - 1, math.floor(fraction * len(members) + 0.5))
        if count > 0:
            held.append(members[generator.permutation(len(members))[:count]])
    held_mask = np.zeros(len(labels), dtype=bool)
    if held:
        held_mask[np.concatenate(held)] = True
    return _subset(positives, np.flatnonzero(~held_mask)), _subset(positives, np.flatnonzero(held_mask))


def _subset(positives: Positives, indices: np.ndarray) -> Positives:
    index = torch.from_numpy(indices.astype(np.int64))
    return Positives(
        images=positives.images[index],
        labels=positives.labels[index],
        class_names=list(positives.class_names),
        names=[positives.names[i] for i in indices.tolist()],
        source_hash=positives.source_hash,
        skipped=list(positives.skipped),
    )
