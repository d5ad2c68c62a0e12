"""Metric series as long-form pandas DataFrames."""

from __future__ import annotations

from typing import Any, Mapping


def series_frame(series: Mapping[str, Any], index: str) -> "Any":
    """``{"name": [[x, value], ...]}`` → a DataFrame with columns ``series``, ``index``
    (``epoch`` for jobs, ``step`` for runs) and ``value``, one row per point, sorted by
    series then ``index``."""
    import pandas as pd

    names, xs, values = [], [], []
    for name in sorted(series):
        points = series[name]
        names.extend([name] * len(points))
        for x, v in points:
            xs.append(x)
            values.append(v)
    return pd.DataFrame(
        {
            "series": pd.Series(names, dtype="object"),
            index: pd.Series(xs, dtype="int64"),
            "value": pd.Series(values, dtype="float64"),
        }
    )
