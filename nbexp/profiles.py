"""Descriptions of a run's input data: content hash, shape, dtypes and a per-column profile.

A profile is small and comparable: for numeric columns count, nulls, mean, std, min, max and
21 quantiles (every 5%), enough to compute PSI and the KS statistic between two versions of
the data later; for other columns count, nulls, distinct count and the top values' shares.
Profiles are memoised by content hash, so an unchanged input is never profiled twice.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from .hashing import hash_array, hash_frame

if TYPE_CHECKING:
    from .store import Store

QUANTILES = [step / 20 for step in range(21)]
TOP_VALUES = 20
SAMPLE_SIZE = 100_000
TABULAR_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
MAX_TABULAR_BYTES = 512 * 1024 * 1024
_memo: OrderedDict[str, dict[str, Any]] = OrderedDict()


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _sample(series: Any) -> Any:
    """At most SAMPLE_SIZE values, drawn with a fixed seed so the same data gives the same profile."""
    if len(series) <= SAMPLE_SIZE:
        return series
    return series.iloc[_positions(len(series))]


def _positions(length: int) -> Any:
    import numpy as np

    return np.sort(np.random.default_rng(0).integers(0, length, size=SAMPLE_SIZE))


def profile_series(series: Any) -> dict[str, Any]:
    """One column's profile.

    Counts, nulls, mean, std, min and max use every value (vectorised, cheap); quantiles and
    top values come from a fixed-seed sample of at most SAMPLE_SIZE values, so profiling a
    1 GB column costs milliseconds, not seconds. `sampled` says how many values were used.
    """
    import pandas as pd

    count = int(series.notna().sum())
    profile: dict[str, Any] = {
        "dtype": str(series.dtype),
        "count": count,
        "nulls": int(len(series) - count),
    }
    dtype = series.dtype
    numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    if numeric and count:
        import numpy as np

        values = series.to_numpy(dtype="float64", na_value=np.nan, copy=False)
        profile.update(kind="numeric", **_numeric_summary(values, count))
    else:
        sample = _sample(series.dropna())
        counts = sample.astype("object").value_counts()
        top = counts.head(TOP_VALUES)
        profile.update(
            kind="categorical",
            distinct=len(counts),
            top={
                str(key): round(int(value) / max(len(sample), 1), 6) for key, value in top.items()
            },
        )
    if count > SAMPLE_SIZE:
        profile["sampled"] = SAMPLE_SIZE
    return profile


def _numeric_summary(values: Any, count: int) -> dict[str, Any]:
    """mean/std/min/max over every value, quantiles over a fixed-seed sample; plain numpy,
    no copies beyond dropping NaNs (a 250 MB column takes ~0.2 s, not ~2 s via pandas)."""
    import numpy as np

    if count < len(values):
        values = values[~np.isnan(values)]
    sample = values if len(values) <= SAMPLE_SIZE else values[_positions(len(values))]
    size = len(values)
    mean = float(values.mean(dtype="float64"))
    # one pass, no full-size temporary (np.std allocates one): E[x²] − E[x]², Bessel-corrected
    square = float(np.dot(values, values)) / size if values.dtype == np.float64 else None
    if square is None:
        std = float(values.std(ddof=1, dtype="float64")) if size > 1 else 0.0
    else:
        std = (max(square - mean * mean, 0.0) * size / (size - 1)) ** 0.5 if size > 1 else 0.0
    return {
        "mean": _finite(mean),
        "std": _finite(std),
        "min": _finite(values.min()),
        "max": _finite(values.max()),
        "quantiles": [_finite(q) for q in np.quantile(sample, QUANTILES).tolist()],
    }


def profile_array(array: Any) -> dict[str, Any]:
    """The profile of a numeric ndarray, flattened, without going through pandas."""
    import numpy as np

    flat = array.reshape(-1)
    if flat.dtype.kind == "f":
        nulls = int(np.count_nonzero(np.isnan(flat)))
    else:
        nulls = 0
        flat = flat.astype("float64") if flat.dtype.kind in "iub" else flat
    count = int(flat.size - nulls)
    profile: dict[str, Any] = {"dtype": str(array.dtype), "count": count, "nulls": nulls}
    if count:
        profile.update(kind="numeric", **_numeric_summary(flat, count))
    if count > SAMPLE_SIZE:
        profile["sampled"] = SAMPLE_SIZE
    return profile


def profile_frame(frame: Any) -> dict[str, dict[str, Any]]:
    import pandas as pd

    if isinstance(frame, pd.Series):
        return {str(frame.name if frame.name is not None else "value"): profile_series(frame)}
    return {str(column): profile_series(frame[column]) for column in frame.columns}


def _remember(key: str, make: Any) -> dict[str, Any]:
    if key in _memo:
        _memo.move_to_end(key)
        return _memo[key]
    value: dict[str, Any] = make()
    _memo[key] = value
    while len(_memo) > 256:
        _memo.popitem(last=False)
    return value


def describe_variable(name: str, value: Any) -> dict[str, Any] | None:
    """A data entry for a DataFrame, Series or ndarray read from the namespace; else None."""
    kind = type(value)
    module = kind.__module__.split(".")[0]
    if module == "pandas" and kind.__name__ in ("DataFrame", "Series"):
        digest = hash_frame(value)

        def make() -> dict[str, Any]:
            return {
                "shape": list(value.shape),
                "dtypes": _dtypes(value),
                "profile": profile_frame(value),
            }

        summary = _remember(digest, make)
        return {
            "kind": "variable",
            "name": name,
            "type": f"pandas.{kind.__name__}",
            "hash": digest,
            **summary,
        }
    if module == "numpy" and kind.__name__ == "ndarray":
        digest = hash_array(value)

        def make_array() -> dict[str, Any]:
            entry: dict[str, Any] = {
                "shape": list(value.shape),
                "dtypes": {"value": str(value.dtype)},
            }
            if value.dtype.kind in "biuf" and value.size:
                entry["profile"] = {"value": profile_array(value)}
            return entry

        summary = _remember(digest, make_array)
        return {
            "kind": "variable",
            "name": name,
            "type": "numpy.ndarray",
            "hash": digest,
            **summary,
        }
    return None


def describe_file(
    store: Store, path: str, *, base: str | None = None, redact: Any = None
) -> dict[str, Any]:
    """A data entry for a file: hash and size, plus rows/columns/dtypes/profile when tabular.

    `redact` (a secrets.Redactor) scrubs the profile before the store caches it: its top
    values would otherwise put a credential the file holds into the index."""
    digest, size = store.file_hash(path)
    shown = os.path.relpath(path, base) if base and path.startswith(base + os.sep) else path
    entry: dict[str, Any] = {
        "kind": "file",
        "path": shown,
        "abspath": path,
        "hash": digest,
        "size": size,
    }
    fmt = TABULAR_SUFFIXES.get(os.path.splitext(path)[1].lower())
    if fmt and size <= MAX_TABULAR_BYTES:
        key = f"tabular:{digest}"
        summary = store.cache_get(key)
        if summary is None:
            summary = _tabular_summary(path, fmt)
            if redact is not None:
                summary = redact(summary)
            store.cache_put(key, summary)
        entry.update(summary)
    return entry


def _tabular_summary(path: str, fmt: str) -> dict[str, Any]:
    import pandas as pd

    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",")
    except Exception as error:  # an unreadable file is still a recorded input, just unprofiled
        return {"format": fmt, "profile_error": f"{type(error).__name__}: {error}"[:200]}
    return {
        "format": fmt,
        "rows": int(frame.shape[0]),
        "columns": [str(column) for column in frame.columns],
        "dtypes": {str(column): str(dtype) for column, dtype in frame.dtypes.items()},
        "profile": profile_frame(frame),
    }


def _dtypes(value: Any) -> dict[str, str]:
    if hasattr(value, "columns"):
        return {str(column): str(dtype) for column, dtype in value.dtypes.items()}
    return {str(value.name if value.name is not None else "value"): str(value.dtype)}
