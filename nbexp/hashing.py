"""Content hashes: of bytes, files, arrays, frames and JSON-able structures.

Everything is xxh3-128 (≈17 GB/s on one core here), written as 32 hex digits. A hash is a
promise about content, never about identity: two frames with equal columns, index and
values hash equal however they were built.
"""

from __future__ import annotations

import json
import os
from typing import Any

import xxhash

CHUNK = 1 << 20  # 1 MiB: the unit files are read in and large buffers are stored in


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """The content hash of a byte buffer."""
    return xxhash.xxh3_128_hexdigest(data)


# What json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) builds
# on every call, built once (a record serialises each of its parts: see `Store.seal`).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> bytes:
    """Sorted-key, compact JSON: the same structure always gives the same bytes."""
    return _CANONICAL.encode(value).encode()


def hash_json(value: Any) -> str:
    """The content hash of a JSON-able structure, independent of key order."""
    return hash_bytes(canonical_json(value))


def hash_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """Hash a file by streaming it; returns (hash, size). Memory use is one chunk."""
    hasher = xxhash.xxh3_128()
    size = 0
    buffer = bytearray(8 * CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            hasher.update(view[:count])
            size += count
    return hasher.hexdigest(), size


def hash_array(array: Any) -> str:
    """Hash a numpy array's dtype, shape and values (object arrays through pickle)."""
    import numpy as np

    hasher = xxhash.xxh3_128()
    hasher.update(f"ndarray|{array.dtype.str}|{array.shape}|".encode())
    if array.dtype.hasobject:
        import pickle

        hasher.update(pickle.dumps(array.tolist(), protocol=5))
    else:
        hasher.update(_bytes_of(np.ascontiguousarray(array)))
    return hasher.hexdigest()


def _bytes_of(array: Any) -> memoryview:
    """A contiguous array's bytes, zero-copy (datetime64/timedelta64 too: no buffer format)."""
    return memoryview(array.reshape(-1).view("u1"))


def _column_digest(hasher: Any, values: Any) -> None:
    import numpy as np
    import pandas as pd

    if isinstance(values.dtype, np.dtype) and not values.dtype.hasobject:
        hasher.update(_bytes_of(np.ascontiguousarray(values.to_numpy())))
    else:
        # Strings, categoricals, extension and object dtypes: pandas' own per-row hash
        # (value-based, vectorised), then hash those 8-byte digests.
        try:
            row_hashes = pd.util.hash_pandas_object(values, index=False).to_numpy()
        except (TypeError, ValueError):  # lists/dicts in an object column: pandas cannot
            import pickle

            hasher.update(pickle.dumps(values.tolist(), protocol=5))
            return
        hasher.update(_bytes_of(np.ascontiguousarray(row_hashes)))


def hash_frame(frame: Any) -> str:
    """Hash a DataFrame or Series over every value, its index, column names and dtypes."""
    import pandas as pd

    hasher = xxhash.xxh3_128()
    if isinstance(frame, pd.Series):
        hasher.update(f"series|{frame.name!r}|{frame.dtype}|{len(frame)}|".encode())
        _column_digest(hasher, frame)
    else:
        hasher.update(f"frame|{frame.shape}|".encode())
        for position in range(frame.shape[1]):
            column = frame.iloc[:, position]
            hasher.update(f"{frame.columns[position]!r}|{column.dtype}|".encode())
            _column_digest(hasher, column)
    index = frame.index.to_frame(index=False) if frame.index.nlevels > 1 else frame.index
    hasher.update(f"index|{index.dtype if frame.index.nlevels == 1 else 'multi'}|".encode())
    if frame.index.nlevels > 1:
        for position in range(index.shape[1]):
            _column_digest(hasher, index.iloc[:, position])
    else:
        _column_digest(hasher, pd.Series(frame.index))
    return hasher.hexdigest()
