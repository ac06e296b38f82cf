"""Time as the library computes with it: unix seconds (float) and whole days."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.data import columns as C

DAY_SECONDS = 86_400.0


def unix_seconds(times: pd.Series | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """UTC timestamps → unix seconds as float64."""
    return np.asarray(pd.to_datetime(times, utc=True).astype("int64"), dtype=np.int64) / 1e9


def whole_seconds(times: pd.Series | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """UTC timestamps → unix seconds rounded down, as int64 (event indexes key on whole seconds)."""
    return np.asarray(pd.to_datetime(times, utc=True).astype("int64"), dtype=np.int64) // 10**9


def data_now(interactions: pd.DataFrame) -> float:
    """Start of the day after the last interaction: a dataset's 'now', when a version built from it is published."""
    last = interactions[C.TIMESTAMP].max().value / 1e9
    return float((np.floor(last / DAY_SECONDS) + 1) * DAY_SECONDS)


def unix_seconds_or_nan(times: pd.Series) -> np.ndarray:
    """Like ``unix_seconds``, with NaN where a time is missing (e.g. an item never out of stock)."""
    seconds = unix_seconds(times.fillna(pd.Timestamp(0, tz="UTC")))
    seconds[times.isna().to_numpy()] = np.nan
    return seconds
