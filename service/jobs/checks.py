"""Checking a job's uploads before it is queued, so a bad upload is refused with its reason, not a failed job later.

Both checks take local files (the web process has them in its scratch folder) and raise
:class:`~service.errors.ServiceError` with the field (``teacher``, ``positives``, ``options.<name>``) and the reason.
Messages name the file the user sent, never the server's paths.

- :func:`check_teacher`: the model file's format from its content (:func:`compression.teachers.detect.detect`, the
  detection :func:`~compression.teachers.load_teacher` itself uses): TorchScript, torch.export or ONNX. Pickles are
  refused (415) with the export instructions, unopened; other unrecognised files are 415 too. The model is *not*
  loaded here (the worker does that, in its own process): the web process reads the file into memory (at most
  ``CONDENSE_MAX_TEACHER_BYTES``), checks its container and, for ONNX, its input shape. A TorchScript file records no
  input shape, so its job needs ``options.input_shape`` (422 otherwise).
- :func:`check_positives`: the archive's safety and every image's decoding (:func:`pu_mining.image_files.iter_images`
  with the service's :class:`~pu_mining.image_files.ReadLimits`; nothing is extracted), the class structure by the
  rules of :func:`pu_mining.positives.load_positives` (class folders or an ``.npz`` with labels; no class without
  images), and, when the teacher's input shape is known, that each image can be brought to it
  (:func:`pu_mining.positives.fit_image`: aspect ratio, upscaling). Images are checked one at a time, so memory stays
  bounded by the largest image. An unrecognised file is 415; an unsafe or unusable archive is 422.

Heavy imports (torch, onnx) happen on first use, not when the web app starts.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import ServiceError
from service.options import JobOptions

__all__ = ["PositivesCheck", "TeacherCheck", "check_classes", "check_pool", "check_positives", "check_teacher"]


@dataclass(frozen=True)
class TeacherCheck:
    """What the teacher check found: ``format``, the input shape when known, size and SHA-256 of the file, and
    ``num_classes`` when the file states it (an ONNX graph's static output width)."""

    format: str
    input_shape: tuple[int, int, int] | None
    size: int
    sha256: str
    num_classes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        found = {
            "format": self.format,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.num_classes is not None:
            found["num_classes"] = self.num_classes
        return found


@dataclass(frozen=True)
class PositivesCheck:
    """What the positives check found: ``format``, image count, images per class and how many members were skipped."""

    format: str
    images: int
    classes: dict[str, int]
    skipped: int
    skipped_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "images": self.images,
            "classes": dict(self.classes),
            "skipped": self.skipped,
            "skipped_examples": list(self.skipped_examples),
        }


def _clean(message: str, path: Path, shown: str) -> str:
    """``message`` with the server's path of the upload replaced by the name the user gave it."""
    for form in (str(path), os.fspath(path.resolve()) if path.exists() else str(path)):
        message = message.replace(form, shown)
    return message


# ----------------------------------------------------------------------------------------------------- teacher


def check_teacher(path: Path, *, filename: str, max_bytes: int, options: JobOptions) -> TeacherCheck:
    """Check the model file at ``path`` (sent as ``filename``); ServiceError 413 / 415 / 422 saying why not."""
    from compression.teachers.archive import map_upload
    from compression.teachers.detect import detect
    from compression.teachers.errors import PickledModelError, TeacherLoadError

    size = path.stat().st_size
    if size > max_bytes:
        raise ServiceError.field(413, "teacher", f"{filename}: {size:,} bytes, over the {max_bytes:,}-byte limit")
    try:
        with map_upload(path, max_bytes) as upload:  # memory-mapped: bounded memory in the web process
            model_format, parsed = detect(upload, max_bytes)
            sha256 = upload.sha256
    except PickledModelError as error:
        raise ServiceError.field(415, "teacher", f"{filename}: {error.reason}") from None
    except TeacherLoadError as error:
        raise ServiceError.field(415, "teacher", f"{filename}: {_clean(error.reason, path, filename)}") from None
    input_shape = options.input_shape
    if model_format == "torchscript" and input_shape is None:
        raise ServiceError.field(
            422,
            "options.input_shape",
            "a TorchScript teacher does not record its input shape; give input_shape [C, H, W], e.g. [3, 32, 32]",
        )
    num_classes = None
    if model_format == "onnx":
        import onnx

        from compression.export.onnx import external_data_tensors

        if isinstance(parsed, onnx.ModelProto) and external_data_tensors(parsed):
            raise ServiceError.field(
                422,
                "teacher",
                f"{filename}: the ONNX model keeps its weights in external data files, which cannot be uploaded; "
                "save it as one self-contained file (onnx.save_model(model, path, save_as_external_data=False))",
            )
        input_shape = _onnx_input_shape(parsed, filename, input_shape)
        num_classes = _onnx_num_classes(parsed)
    return TeacherCheck(model_format, input_shape, size, sha256, num_classes)


def check_classes(teacher: TeacherCheck, positives: PositivesCheck, *, filename: str, field: str = "positives") -> None:
    """422 when labelled images (positives or a test set) have more classes than the teacher's output (if stated)."""
    if teacher.num_classes is not None and len(positives.classes) > teacher.num_classes:
        raise ServiceError.field(
            422,
            field,
            f"{filename}: {len(positives.classes)} classes ({', '.join(list(positives.classes)[:10])}), but the "
            f"teacher outputs {teacher.num_classes}; send at most one folder per class the teacher knows",
        )


def _onnx_num_classes(proto: Any) -> int | None:
    """The static width of the graph's one ``(N, classes)`` output, or None (dynamic, other shapes)."""
    outputs = list(proto.graph.output)
    if len(outputs) != 1:
        return None
    dims = list(outputs[0].type.tensor_type.shape.dim)
    if len(dims) != 2 or not dims[1].HasField("dim_value") or dims[1].dim_value < 1:
        return None
    return int(dims[1].dim_value)


def _onnx_input_shape(proto: Any, filename: str, given: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    from compression.metrics.graph_ops import image_input

    try:
        dims = image_input(proto).type.tensor_type.shape.dim
    except ValueError as error:
        raise ServiceError.field(422, "teacher", f"{filename}: {error}") from None
    stated = [dim.dim_value if dim.HasField("dim_value") else None for dim in list(dims)[1:]]
    if given is not None:
        for axis, (have, want) in enumerate(zip(stated, given, strict=True)):
            if have is not None and have != want:
                shown = tuple("?" if d is None else d for d in stated)
                raise ServiceError.field(
                    422,
                    "options.input_shape",
                    f"{list(given)} disagrees with the model's own input (C, H, W) = {shown} at axis {'CHW'[axis]}",
                )
        return given
    if any(dim is None for dim in stated):
        shown = tuple("?" if d is None else d for d in stated)
        raise ServiceError.field(
            422,
            "options.input_shape",
            f"the model's input (C, H, W) = {shown} has dynamic dimensions; give input_shape [C, H, W]",
        )
    channels, height, width = (int(dim) for dim in stated if dim is not None)
    return (channels, height, width)


# --------------------------------------------------------------------------------------------------- positives


def check_positives(
    path: Path,
    *,
    filename: str,
    input_shape: tuple[int, int, int] | None,
    max_bytes: int,
    max_files: int,
    field: str = "positives",
) -> PositivesCheck:
    """Check the positives at ``path`` (sent as ``filename``); ServiceError 413 / 415 / 422 saying why unusable.

    ``field`` names the upload in errors (``test`` for a test set, which has the positives' format)."""
    from pu_mining.image_files import ImageDecodeError, ReadLimits, SkippedMember, UnsafeArchiveError, iter_images
    from pu_mining.positives import fit_image

    size = path.stat().st_size
    if size > max_bytes:
        raise ServiceError.field(413, field, f"{filename}: {size:,} bytes, over the {max_bytes:,}-byte limit")
    limits = ReadLimits(max_files=max_files, max_total_bytes=max(4 * max_bytes, 1024**3))

    def fail(status: int, error: Exception) -> ServiceError:
        return ServiceError.field(status, field, _clean(str(error), path, filename))

    try:
        reader = iter_images(path, limits)
    except UnsafeArchiveError as error:
        raise fail(422, error) from None
    except ValueError as error:
        raise fail(415, error) from None
    if reader.format == "image":
        raise ServiceError.field(
            415,
            field,
            f"{filename}: a single image; send a zip or tar archive with one folder per class, or an .npz with "
            "'x' (images) and 'y' (labels)",
        )
    if reader.format in ("npy", "idx"):
        raise ServiceError.field(
            415, field, f"{filename}: images without labels; send an .npz with 'x' (images) and 'y' (labels)"
        )
    names: list[str] = []
    labels: list[str | int | None] = []
    fit_errors: list[SkippedMember] = []
    try:
        for record in reader:
            if input_shape is not None:
                try:
                    fit_image(record.image, input_shape, record.name)
                except ValueError as error:
                    fit_errors.append(SkippedMember(record.name, str(error).removeprefix(f"{record.name}: ")))
                    if len(fit_errors) >= 5:
                        break
                    continue
            names.append(record.name)
            labels.append(record.label)
    except (UnsafeArchiveError, ImageDecodeError) as error:
        raise fail(422, error) from None
    except ValueError as error:  # no images at all, unreadable member, ...
        raise fail(422, error) from None
    if fit_errors:
        listed = "; ".join(str(item) for item in fit_errors)
        raise ServiceError.field(
            422,
            field,
            f"{filename}: images that cannot be brought to the teacher's input {input_shape}: {listed}",
        )
    classes = _classes(path, reader.format, names, labels, list(reader.skipped), filename, field)
    return PositivesCheck(
        format=reader.format,
        images=sum(classes.values()),
        classes=classes,
        skipped=len(reader.skipped),
        skipped_examples=[str(item) for item in reader.skipped[:10]],
    )


def _classes(
    path: Path,
    format: str,
    names: list[str],
    labels: list[str | int | None],
    skipped: list[Any],
    filename: str,
    field: str = "positives",
) -> dict[str, int]:
    """Images per class by :func:`pu_mining.positives.load_positives`' rules (its own helpers, so the rules agree)."""
    from pu_mining.positives import array_labels, folder_labels

    try:
        if format == "npz":
            indices, class_names = array_labels(filename, names, labels, None)
        else:
            indices, class_names, _keep, _names = folder_labels(filename, names, skipped, None, "raise")
    except ValueError as error:
        raise ServiceError.field(422, field, _clean(str(error), path, filename)) from None
    counts = Counter(indices)
    return {name: counts[index] for index, name in enumerate(class_names)}


# -------------------------------------------------------------------------------------------------------- pool


def check_pool(blobs: Any, name: str) -> None:
    """422 on ``options.pool`` when the service has pools and none is named ``name``.

    A service with no pool at all is left to the worker's message (nothing to choose from; an operator adds one).
    """
    from pu_mining.pool import PoolStore

    pools = sorted(manifest.name for manifest in PoolStore(blobs).list())
    if pools and name not in pools:
        raise ServiceError.field(
            422, "options.pool", f"no pool named {name!r}; this service has: {', '.join(pools)} (GET /api/v1/pools)"
        )
