"""An ONNX model's structure without its weights, read in bounded memory from a file of any size.

Checking an uploaded ONNX teacher (its inputs, outputs, opsets, whether its weights live in external files) needs the
graph, not the tensors' values. Parsing the whole protobuf copies every weight into memory, twice the file's size
with the file's own bytes. :func:`onnx_skeleton` walks the protobuf wire format over a memory map instead and copies
every field except the value fields of ``TensorProto`` (``raw_data``, ``float_data``, ...): each tensor keeps its
name, type, dimensions and external-data fields. Weight pages of the file are skipped by their lengths, never read.

The walk knows where tensors and sub-graphs live (``ModelProto.graph`` and ``functions``; ``GraphProto.node``,
``initializer`` and ``sparse_initializer``; ``NodeProto.attribute``; ``AttributeProto.t``, ``g``, ``tensors``,
``graphs``, ``sparse_tensor``, ``sparse_tensors``; ``FunctionProto.node``; ``SparseTensorProto.values`` and
``indices``), following onnx/onnx.proto. Hostile files are bounded: at most :data:`MAX_FIELDS` fields and
:data:`MAX_DEPTH` nested messages are walked and :data:`MAX_SKELETON_BYTES` copied; malformed wire data is a
:class:`ValueError`.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import onnx

__all__ = ["MAX_DEPTH", "MAX_FIELDS", "MAX_SKELETON_BYTES", "onnx_skeleton"]

MAX_FIELDS = 2_000_000
MAX_DEPTH = 64
MAX_SKELETON_BYTES = 64 * 1024**2
"""Most bytes copied outside tensor values (names, shapes, attributes, doc strings): a hostile file could otherwise
put its bulk in a doc string. Real graphs need a few MiB at most."""

_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION = range(7)
# message kind -> {field number: kind of the nested message}
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 25: _FUNCTION},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {},
}
# TensorProto's value fields: float_data, int32_data, string_data, int64_data, raw_data, double_data, uint64_data.
_TENSOR_VALUES = frozenset({4, 5, 6, 7, 9, 10, 11})


def _varint(data: mmap.mmap, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= end or shift > 63:
            raise ValueError("malformed protobuf: a varint runs past its message")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Walk:
    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.fields = 0
        self.copied = 0

    def message(self, start: int, end: int, kind: int, depth: int) -> bytes:
        if depth > MAX_DEPTH:
            raise ValueError(f"the model nests more than {MAX_DEPTH} messages")
        children = _CHILDREN[kind]
        out = bytearray()
        position = start
        while position < end:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise ValueError(f"the model has more than {MAX_FIELDS:,} protobuf fields")
            field_start = position
            key, position = _varint(self.data, position, end)
            number, wire_type = key >> 3, key & 7
            if number == 0:
                raise ValueError("malformed protobuf: field number 0")
            if wire_type == 0:
                _, position = _varint(self.data, position, end)
            elif wire_type == 1:
                position += 8
            elif wire_type == 5:
                position += 4
            elif wire_type == 2:
                length, body = _varint(self.data, position, end)
                position = body + length
                if position > end:
                    raise ValueError("malformed protobuf: a field runs past its message")
                if number in children:
                    nested = self.message(body, position, children[number], depth + 1)
                    out += _encode_varint(key) + _encode_varint(len(nested)) + nested
                    continue
            else:
                raise ValueError(f"malformed protobuf: wire type {wire_type} (groups are not used by ONNX)")
            if position > end:
                raise ValueError("malformed protobuf: a field runs past its message")
            if kind == _TENSOR and number in _TENSOR_VALUES:
                continue
            self.copied += position - field_start
            if self.copied > MAX_SKELETON_BYTES:
                raise ValueError(f"the model holds more than {MAX_SKELETON_BYTES:,} bytes outside its tensors' values")
            out += self.data[field_start:position]
        return bytes(out)


def onnx_skeleton(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """The ONNX model at ``path`` with every tensor's values left out (see the module docstring).

    Raises :class:`ValueError` when the file is not well-formed protobuf or exceeds the walk's bounds, and
    :class:`OSError` when it cannot be read. Whether the result is a usable model is the caller's check.
    """
    file = Path(path)
    with file.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise ValueError("the file is empty")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            skeleton = _Walk(data).message(0, size, _MODEL, 0)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(skeleton)
    except Exception as error:
        raise ValueError(f"malformed protobuf ({error})") from None
    return model
