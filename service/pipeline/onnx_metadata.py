"""What ``student.onnx`` says about itself: ONNX ``metadata_props`` a user can read without the report.

Keys (all strings; lists and objects as JSON):

| key | value |
|---|---|
| ``condense.class_names`` | the classes in output order, from the positives' folder names (JSON list) |
| ``condense.input_shape`` | ``[C, H, W]`` of one image; the batch dimension is free (JSON list) |
| ``condense.input_layout`` | ``NCHW float32`` |
| ``condense.pixel_range`` | ``[0, 1]``: pixels divided by 255 (JSON list) |
| ``condense.mean``, ``condense.std`` | then ``(x - mean) / std`` per channel (JSON lists) |
| ``condense.student`` | the student family trained (slim, ghost, binary, adder, qnn4, qnn2: what ``auto`` chose) |
| ``condense.version`` | the Condense version that made the file |
| ``condense.job_id`` | the job that made it (written by the service's worker) |

The student is distilled on the positives as loaded (pixels in [0, 1]); the teacher's own normalisation is applied
inside the teacher only, so the student's mean is 0 and its std 1 per channel.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from importlib import metadata as package_metadata
from pathlib import Path

__all__ = ["condense_version", "read_onnx_metadata", "stamp_onnx_metadata", "student_metadata"]

logger = logging.getLogger(__name__)


def condense_version() -> str:
    """The installed Condense version (``0+unknown`` when run from a tree that is not installed)."""
    try:
        return package_metadata.version("condense")
    except package_metadata.PackageNotFoundError:
        return "0+unknown"


def student_metadata(class_names: Sequence[str], input_shape: Sequence[int], student: str) -> dict[str, str]:
    """The metadata of a student taking ``input_shape`` images in [0, 1] and predicting ``class_names``."""
    if isinstance(class_names, str) or not all(isinstance(name, str) for name in class_names):
        raise TypeError("class_names must be a list of str")
    shape = [int(size) for size in input_shape]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be [C, H, W] of positive sizes, got {list(input_shape)}")
    channels = shape[0]
    return {
        "condense.class_names": json.dumps(list(class_names)),
        "condense.input_shape": json.dumps(shape),
        "condense.input_layout": "NCHW float32",
        "condense.pixel_range": json.dumps([0, 1]),
        "condense.mean": json.dumps([0.0] * channels),
        "condense.std": json.dumps([1.0] * channels),
        "condense.student": str(student),
        "condense.version": condense_version(),
    }


def stamp_onnx_metadata(path: str | os.PathLike[str], props: Mapping[str, str]) -> bool:
    """Set ``props`` as metadata of the ONNX file at ``path`` (same keys replaced), rewriting it atomically.

    Returns False, leaving the file as it is, when it is not an ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    from storage.files import atomic_write

    path = Path(path)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as error:
        logger.warning("%s: not an ONNX model, no metadata written (%s)", path.name, error)
        return False
    kept = [prop for prop in model.metadata_props if prop.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=str(key), value=str(value))
    with atomic_write(path) as handle:
        handle.write(model.SerializeToString())
    return True


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file at ``path`` as a dict."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}
