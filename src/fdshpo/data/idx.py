"""Reading and writing IDX files (the MNIST / Fashion-MNIST on-disk format), gzipped or raw.

Format (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions d, then d 32-bit sizes, then exactly prod(sizes) bytes of data. A file is gzipped when
it starts with the gzip magic bytes 1f 8b, whatever its name.

Every structural problem (bad magic, unsupported type, truncated or over-long data, a broken gzip
stream) raises :class:`IdxFormatError` naming the file: a short dataset is never returned.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08


class IdxFormatError(UserError):
    """An IDX file is corrupted, truncated or not an IDX file at all."""


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is a gzip file (by content, not by name)."""
    data = path.read_bytes()
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise IdxFormatError(
            f"{path}: the gzip stream is corrupted or truncated ({err}); "
            "download or copy the file again") from None


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """The uint8 array of shape (sizes...) stored in an IDX file with ``ndim`` dimensions."""
    path = Path(path)
    data = read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxFormatError(f"{path}: not an IDX file (bad magic number); expected a "
                             "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] file")
    if data[2] != UBYTE:
        raise IdxFormatError(f"{path}: IDX type code 0x{data[2]:02x} is not supported; "
                             "only unsigned bytes (0x08) are")
    if data[3] != ndim:
        raise IdxFormatError(f"{path}: has {data[3]} dimensions, expected {ndim}")
    if len(data) < header:
        raise IdxFormatError(f"{path}: truncated inside the header ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)
    actual = len(data) - header
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise IdxFormatError(
            f"{path}: {what}: the header promises {expected} data bytes for shape {shape} but "
            f"the file holds {actual}; download or copy the file again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write a uint8 array as an IDX file (gzipped when ``compress`` or the name ends in .gz)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UBYTE, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(payload, mtime=0) if compress else payload)
    return path
