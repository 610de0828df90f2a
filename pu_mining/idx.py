"""Reader for the IDX format of (Fashion-)MNIST (LeCun et al.; http-free: files ship in Debian packages).

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian uint32
per dimension, then the data in C order. Files may be gzip-compressed (detected by content, not by name).
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
MAX_IDX_BYTES = 1 << 31


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array stored in the IDX file at ``path`` (native byte order). ValueError if it is not valid IDX."""
    with open(path, "rb") as raw:
        head = raw.read(2)
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if head == _GZIP_MAGIC else raw
        try:
            data = stream.read(MAX_IDX_BYTES + 1)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: corrupt gzip stream ({error})") from None
    return parse_idx(data, source=str(path))


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (uncompressed)."""
    if len(data) > MAX_IDX_BYTES:
        raise ValueError(f"{source}: larger than {MAX_IDX_BYTES} bytes")
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{source}: not an IDX file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        raise ValueError(f"{source}: unknown IDX data type 0x{type_code:02x}")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise ValueError(f"{source}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise ValueError(f"{source}: IDX header promises {expected} data bytes for shape {shape}, found {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
