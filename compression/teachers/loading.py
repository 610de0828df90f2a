"""Loading a user's trained classifier (the *teacher*) safely, and running it.

:func:`load_teacher` accepts three formats, recognised from the file's *content* (never its extension):

- ``"torchscript"``: a ``torch.jit.save`` archive (zip with ``data.pkl`` plus TorchScript source under
  ``code/``), from ``torch.jit.script`` or ``torch.jit.trace``. It records no input shape, so
  ``input_shape=(C, H, W)`` must be given.
- ``"torch_export"``: a ``torch.export.save`` archive (``.pt2``: zip with ``archive_format`` = ``pt2``,
  the program as JSON under ``models/`` and raw weight bytes under ``data/``). The input shape comes from
  the program's input spec.
- ``"onnx"``: an ONNX protobuf, run with ONNX Runtime (CPU). The input shape comes from the graph input.

The class count comes from one forward pass on a zero input. Anything that would need unpickling --
``torch.save(model)``, ``torch.save(model.state_dict())``, a raw pickle -- is refused with
:data:`EXPORT_INSTRUCTIONS`, the one-line commands that export a model to an accepted format.

Where the work is done, in :mod:`compression.teachers`:

- :mod:`~compression.teachers.errors`: :class:`TeacherLoadError`, :class:`PickledModelError`,
  :data:`EXPORT_INSTRUCTIONS`.
- :mod:`~compression.teachers.archive`: reading the file once (size limit) and opening zip archives.
- :mod:`~compression.teachers.detect`: format detection (:func:`detect_teacher_format`); pickles refused.
- :mod:`~compression.teachers.torchscript`, :mod:`~compression.teachers.torch_export`,
  :mod:`~compression.teachers.onnx_teacher`: each format's validation and loading, into a
  :class:`~compression.teachers.loaded_model.LoadedModel`.
- this module: :func:`load_teacher`, :class:`Teacher` (running the model in batches), and teacher outputs
  computed once (:class:`TeacherOutputCache`, :func:`teacher_logits`).
- :mod:`~compression.teachers.preprocessing`: input adaptation and normalisation.

Never unpickling an upload -- what this package relies on (torch 2.14.1, pinned in pyproject.toml); each
point is set out in full in the module named:

- No ``pickle`` / ``torch.load`` call anywhere in :mod:`compression.teachers`. Pickles are recognised by
  their bytes (protocol header ``0x80 0x02-0x05``; a ``torch.save`` zip has ``data.pkl`` but no
  TorchScript ``code/``) and refused before any loader sees them (:mod:`~compression.teachers.detect`).
- TorchScript (:mod:`~compression.teachers.torchscript`): ``torch.jit.load`` reads the archive's pickles
  with torch's own C++ unpickler, never Python's ``pickle``, and it resolves only tensor-rebuilding
  functions and the archive's own TorchScript classes. Before loading, unknown archive members are refused,
  and so is TorchScript source that calls the operators that read or write files or operators outside
  ``aten`` / ``prim`` / ``quantized``.
- torch.export (:mod:`~compression.teachers.torch_export`): ``torch.export.load`` is NOT used (it unpickles
  weights, constants and sample inputs, ``eval``s symbolic shapes and ``exec``s ``guards_code``). The
  archive's members, weight configs, node targets, symbolic expressions and names are validated, and the
  validated JSON is deserialized with torch's own internal pieces from raw tensor bytes; ``guards_code``
  and stack traces are dropped and the sample inputs never read.
- ONNX (:mod:`~compression.teachers.onnx_teacher`): parsed by protobuf and run by ONNX Runtime; models
  referencing external data files are refused (ONNX Runtime would read them from paths the file names).
- The file is read once into memory (:mod:`~compression.teachers.archive`; after a size check, default
  limit 2 GiB): format detection, validation, hashing and loading all use those same bytes. Zip archives
  are opened both by :mod:`zipfile` and by torch's own reader, and must list the same members, so both
  readers see the same archive.

Loading a model is not the same as trusting it. These checks keep an uploaded file from running Python
code or touching files, at load time or when the model runs; they do not bound its computation (a
crafted graph or shape expression can still burn CPU or memory, and operators are trusted to check
their own bounds), so the service should still run teachers in a sandboxed worker (no secrets, no
network, time and memory limits).

Errors: a file that cannot be used raises :class:`TeacherLoadError` (a ``ValueError``) naming the file
and the reason; pickles raise its subclass :class:`PickledModelError`. Bad arguments raise
``TypeError`` / ``ValueError``. A model that loads but fails while running raises ``RuntimeError``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from compression.files import atomic_path
from compression.teachers.archive import DEFAULT_MAX_TEACHER_BYTES, Archive, Upload, check_max_bytes, read_upload
from compression.teachers.detect import TEACHER_FORMATS, TeacherFormat, detect, detect_teacher_format
from compression.teachers.errors import EXPORT_INSTRUCTIONS, PickledModelError, TeacherLoadError, describe_exception
from compression.teachers.onnx_teacher import load_onnx
from compression.teachers.preprocessing import InputSpec, as_float_tuple, check_input_shape, check_pixel_range
from compression.teachers.torch_export import load_torch_export
from compression.teachers.torchscript import load_torchscript

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_TEACHER_BYTES",
    "EXPORT_INSTRUCTIONS",
    "TEACHER_FORMATS",
    "PickledModelError",
    "Teacher",
    "TeacherFormat",
    "TeacherLoadError",
    "TeacherOutputCache",
    "detect_teacher_format",
    "load_teacher",
    "teacher_logits",
]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256

_PROBE_BATCH = 2
_MIN_CLASSES = 2


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


class Teacher:
    """A loaded teacher classifier; made by :func:`load_teacher`.

    Call it with raw images -- float ``(N, C, H, W)`` in ``[0, 1]``, any size, 1 or 3 channels -- to get
    float32 logits ``(N, num_classes)`` on the CPU, computed under ``torch.no_grad`` in batches. Images
    are adapted (resized, channels converted) and normalised by :attr:`preprocess` first.

    Attributes: ``format``, ``path``, ``file_sha256``, ``file_bytes``, ``input_shape`` ``(C, H, W)``,
    ``num_classes``, ``preprocess`` (:class:`InputSpec`), ``parameter_count`` (``None`` when unknown),
    ``fixed_batch_size`` (the batch size a model with a static batch dimension was exported with;
    batches are then padded to it), ``module`` (torch formats: the ``ScriptModule`` in eval mode, or
    the ``GraphModule`` of the exported program -- whose train/eval behaviour was fixed at export
    time -- for access to intermediate feature maps), ``exported_program`` (torch_export only) and
    ``session`` (ONNX only: the ONNX Runtime ``InferenceSession``).
    """

    def __init__(
        self,
        *,
        format: TeacherFormat,
        path: Path,
        file_sha256: str,
        file_bytes: int,
        preprocess: InputSpec,
        run: Callable[[torch.Tensor], Any],
        normalisation_origin: dict[str, str],
        fixed_batch_size: int | None = None,
        parameter_count: int | None = None,
        module: nn.Module | None = None,
        session: ort.InferenceSession | None = None,
        exported_program: Any = None,
    ) -> None:
        self.format = format
        self.path = path
        self.file_sha256 = file_sha256
        self.file_bytes = file_bytes
        self.preprocess = preprocess
        self.fixed_batch_size = fixed_batch_size
        self.parameter_count = parameter_count
        self.module = module
        self.session = session
        self.exported_program = exported_program
        self._run = run
        self._normalisation_origin = dict(normalisation_origin)
        self.num_classes = self._probe_num_classes()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.preprocess.input_shape

    def _forward_prepared(self, batch: torch.Tensor, expected_classes: int | None) -> torch.Tensor:
        """Run the model on an adapted, normalised batch; pads to ``fixed_batch_size`` where needed."""
        count = batch.shape[0]
        if self.fixed_batch_size is None:
            chunks = [batch]
        else:
            size = self.fixed_batch_size
            chunks = [batch[start : start + size] for start in range(0, count, size)]
            if chunks[-1].shape[0] < size:
                padding = batch.new_zeros((size - chunks[-1].shape[0], *batch.shape[1:]))
                chunks[-1] = torch.cat([chunks[-1], padding])
        results = []
        for chunk in chunks:
            output = self._run(chunk)
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"the model returned {type(output).__name__}, not a single logits tensor")
            if output.ndim != 2 or output.shape[0] != chunk.shape[0]:
                raise ValueError(
                    f"the model returned shape {tuple(output.shape)} for a batch of {chunk.shape[0]}; "
                    "expected (batch, classes) logits"
                )
            if expected_classes is not None and output.shape[1] != expected_classes:
                raise ValueError(f"the model returned {output.shape[1]} classes, not {expected_classes}")
            results.append(output.detach().to(device="cpu", dtype=torch.float32))
        return torch.cat(results)[:count]

    def _probe_num_classes(self) -> int:
        batch = self.fixed_batch_size or _PROBE_BATCH
        zeros = torch.zeros((batch, *self.input_shape))
        try:
            with torch.no_grad():
                logits = self._forward_prepared(self.preprocess.normalize(zeros), None)
        except Exception as exc:
            raise TeacherLoadError(
                self.path,
                f"the model fails on a zero input of shape {tuple(zeros.shape)} ({describe_exception(exc)})",
            ) from exc
        classes = int(logits.shape[1])
        if classes < _MIN_CLASSES:
            raise TeacherLoadError(
                self.path, f"the model outputs {classes} value(s) per image; a classifier with >= 2 logits is needed"
            )
        if not torch.isfinite(logits).all():
            raise TeacherLoadError(self.path, "the model outputs NaN or infinite logits on a zero input")
        return classes

    def predict_in_batches(self, images: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
        """Logits ``(N, num_classes)`` (float32, CPU) for raw ``[0, 1]`` images ``(N, C, H, W)``.

        Images are adapted and normalised batch by batch, so memory stays bounded by ``batch_size``
        (a model with a static batch dimension runs in padded batches of ``fixed_batch_size``).
        Raw pixels far outside ``[0, 1]`` raise ValueError (see :func:`check_pixel_range`).
        """
        batch_size = _check_batch_size(batch_size)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
        if images.is_floating_point():
            check_pixel_range(images)
        count = images.shape[0]
        logits = torch.empty((count, self.num_classes), dtype=torch.float32)
        with torch.no_grad():
            for start in range(0, count, batch_size):
                batch = self.preprocess.prepare(images[start : start + batch_size].detach().cpu())
                try:
                    logits[start : start + batch.shape[0]] = self._forward_prepared(batch, self.num_classes)
                except Exception as exc:
                    raise RuntimeError(
                        f"teacher {self.path.name} failed on a batch of shape {tuple(batch.shape)}: "
                        f"{describe_exception(exc)}"
                    ) from exc
        return logits

    def __call__(self, images: torch.Tensor, *, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
        """Same as :meth:`predict_in_batches`."""
        return self.predict_in_batches(images, batch_size)

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary: format, file, input shape, classes, normalisation, parameter count."""
        return {
            "format": self.format,
            "file": str(self.path),
            "file_bytes": self.file_bytes,
            "file_sha256": self.file_sha256,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "normalisation": {
                "mean": list(self.preprocess.mean or ()),
                "std": list(self.preprocess.std or ()),
                "source": dict(self._normalisation_origin),
            },
            "parameter_count": self.parameter_count,
            "fixed_batch_size": self.fixed_batch_size,
        }

    def __repr__(self) -> str:
        return (
            f"Teacher(format={self.format!r}, file={self.path.name!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


def _resolve_input_shape(
    upload: Upload,
    format: TeacherFormat,
    model_dims: tuple[int | None, int | None, int | None] | None,
    given: tuple[int, int, int] | None,
) -> tuple[int, int, int]:
    if given is not None:
        if model_dims is not None:
            for axis, (stated, wanted) in enumerate(zip(model_dims, given, strict=True)):
                if stated is not None and stated != wanted:
                    raise upload.fail(
                        f"input_shape {given} disagrees with the model's own input (C, H, W) = "
                        f"{tuple('?' if d is None else d for d in model_dims)} at axis {'CHW'[axis]}"
                    )
        return given
    if model_dims is None:
        raise upload.fail(
            f"a {format} model does not record its input shape; pass input_shape=(C, H, W), e.g. (3, 32, 32)"
        )
    if any(dim is None for dim in model_dims):
        shown = tuple("?" if d is None else d for d in model_dims)
        raise upload.fail(f"the model's input (C, H, W) = {shown} has dynamic dimensions; pass input_shape=(C, H, W)")
    channels, height, width = (int(dim) for dim in model_dims if dim is not None)
    return (channels, height, width)


def _resolve_normalisation(
    upload: Upload,
    name: str,
    given: Sequence[float] | None,
    carried: Any,
    carried_origin: str,
) -> tuple[Any, str]:
    if given is not None:
        return given, "argument"
    if carried is None:
        return None, "default"
    if isinstance(carried, torch.Tensor):
        carried = carried.detach().reshape(-1).tolist()
    if not isinstance(carried, list | tuple) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in carried
    ):
        raise upload.fail(f"the model's {carried_origin} must be a list of numbers (its {name}), got {carried!r}")
    return list(carried), carried_origin


def load_teacher(
    path: str | os.PathLike[str],
    *,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    max_bytes: int = DEFAULT_MAX_TEACHER_BYTES,
) -> Teacher:
    """Load a teacher classifier from a TorchScript, torch.export (``.pt2``) or ONNX file.

    The format is detected from the file's content. ``input_shape`` ``(C, H, W)`` is required for
    TorchScript (and for models with dynamic C / H / W); otherwise it is read from the model and, if
    given as well, must agree with it. ``mean`` / ``std`` (one value per channel) override the
    normalisation the model carries (see :mod:`compression.teachers.preprocessing`); the default is
    mean 0 / std 1, i.e. raw ``[0, 1]`` pixels. Files over ``max_bytes`` (default 2 GiB) are refused.

    Raises :class:`PickledModelError` for pickles (``torch.save``) -- with the commands to export the
    model properly -- and :class:`TeacherLoadError` (a ``ValueError`` naming the file) for missing,
    empty, oversized, corrupt, unrecognised or unsafe files and for models that do not run on a zero
    input or do not output ``(N, classes)`` logits.
    """
    max_bytes = check_max_bytes(max_bytes)
    given_shape = None if input_shape is None else check_input_shape(input_shape)
    upload = read_upload(path, max_bytes)
    model_format, parsed = detect(upload, max_bytes)
    try:
        if model_format == "torchscript" and isinstance(parsed, Archive):
            loaded = load_torchscript(upload, parsed)
        elif model_format == "torch_export" and isinstance(parsed, Archive):
            loaded = load_torch_export(upload, parsed)
        elif model_format == "onnx" and isinstance(parsed, onnx.ModelProto):
            loaded = load_onnx(upload, parsed)
        else:  # pragma: no cover - detect pairs each format with its parsed form
            raise upload.fail(f"internal error: format {model_format!r} with {type(parsed).__name__}")
    except TeacherLoadError:
        raise
    except Exception as exc:
        raise upload.fail(f"the {model_format} loader failed ({describe_exception(exc)})") from exc

    shape = _resolve_input_shape(upload, model_format, loaded.input_dims, given_shape)
    # The caller's own values alone first: a plain TypeError / ValueError.
    InputSpec(
        shape,
        mean=None if mean is None else as_float_tuple(mean, "mean"),
        std=None if std is None else as_float_tuple(std, "std"),
    )
    resolved_mean, mean_origin = _resolve_normalisation(upload, "mean", mean, loaded.mean, loaded.mean_origin)
    resolved_std, std_origin = _resolve_normalisation(upload, "std", std, loaded.std, loaded.std_origin)
    try:
        spec = InputSpec(shape, mean=resolved_mean, std=resolved_std)
    except (TypeError, ValueError) as exc:  # so the values the model carries are at fault
        raise upload.fail(f"invalid normalisation in the model ({mean_origin} / {std_origin}): {exc}") from None
    teacher = Teacher(
        format=model_format,
        path=upload.path,
        file_sha256=upload.sha256,
        file_bytes=len(upload.data),
        preprocess=spec,
        run=loaded.run,
        normalisation_origin={"mean": mean_origin, "std": std_origin},
        fixed_batch_size=loaded.fixed_batch_size,
        parameter_count=loaded.parameter_count,
        module=loaded.module,
        session=loaded.session,
        exported_program=loaded.exported_program,
    )
    logger.info("loaded teacher %s: %s", upload.path, teacher.describe())
    return teacher


# --------------------------------------------------------------------------------------------------
# teacher outputs, computed once


def _images_digest(images: torch.Tensor) -> str:
    flat = images.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{images.dtype}|{tuple(images.shape)}|".encode())
    digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()


class TeacherOutputCache:
    """Teacher logits on fixed (un-augmented) images, computed once and reused.

    Keyed by a SHA-256 over the teacher file's hash, its input spec (shape, mean, std) and the images'
    dtype, shape and bytes. With ``directory`` the logits are also kept on disk as float32 ``.npy`` files
    (written atomically, read with ``allow_pickle=False``; an unreadable or mismatched file is
    recomputed and replaced); without it they live in memory only. ``hits`` / ``misses`` count lookups.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if directory is not None and not isinstance(directory, str | os.PathLike):
            raise TypeError(f"directory must be a str, os.PathLike or None, got {type(directory).__name__}")
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None:
            if self.directory.exists() and not self.directory.is_dir():
                raise ValueError(f"cache directory {self.directory} exists and is not a directory")
            self.directory.mkdir(parents=True, exist_ok=True)
        self._memory: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(teacher: Teacher, images: torch.Tensor) -> str:
        spec = json.dumps(teacher.preprocess.as_dict(), sort_keys=True)
        text = f"condense-teacher-logits-v1|{teacher.file_sha256}|{spec}|{_images_digest(images)}"
        return hashlib.sha256(text.encode()).hexdigest()

    def _file(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{key}.npy"

    def _read_disk(self, key: str, expected_shape: tuple[int, int]) -> torch.Tensor | None:
        file = self._file(key)
        if file is None or not file.is_file():
            return None
        try:
            array = np.load(file, allow_pickle=False)
        except Exception as exc:
            logger.warning("ignoring unreadable teacher-logits cache file %s (%s)", file, describe_exception(exc))
            return None
        if array.dtype != np.float32 or array.shape != expected_shape:
            logger.warning("ignoring teacher-logits cache file %s: %s %s", file, array.dtype, array.shape)
            return None
        return torch.from_numpy(array)

    def _write_disk(self, key: str, logits: torch.Tensor) -> None:
        file = self._file(key)
        if file is None:
            return
        with atomic_path(file) as temporary, temporary.open("wb") as handle:
            np.save(handle, logits.numpy().astype(np.float32, copy=False), allow_pickle=False)

    def get_or_compute(
        self, teacher: Teacher, images: torch.Tensor, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> torch.Tensor:
        """``teacher(images)``, from the cache when these images were seen with this teacher before.

        Returns a fresh tensor each time (callers may modify it without touching the cache).
        """
        if not isinstance(teacher, Teacher):
            raise TypeError(f"teacher must be a Teacher, got {type(teacher).__name__}")
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        key = self.key(teacher, images)
        cached = self._memory.get(key)
        if cached is None:
            cached = self._read_disk(key, (int(images.shape[0]), teacher.num_classes))
            if cached is not None:
                self._memory[key] = cached
        if cached is not None:
            self.hits += 1
            return cached.clone()
        self.misses += 1
        logits = teacher.predict_in_batches(images, batch_size).contiguous()
        self._memory[key] = logits
        self._write_disk(key, logits)
        return logits.clone()

    def clear_memory(self) -> None:
        """Forget the in-memory copies (files on disk stay)."""
        self._memory.clear()


def teacher_logits(
    teacher: Teacher,
    images: torch.Tensor,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache: TeacherOutputCache | str | os.PathLike[str] | None = None,
) -> torch.Tensor:
    """The teacher's logits on ``images``; with ``cache`` (a :class:`TeacherOutputCache` or a directory)
    they are computed once and reused."""
    if cache is None:
        return teacher.predict_in_batches(images, batch_size)
    if not isinstance(cache, TeacherOutputCache):
        cache = TeacherOutputCache(cache)
    return cache.get_or_compute(teacher, images, batch_size=batch_size)
