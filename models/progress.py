"""Progress bars for the steps that take more than a few seconds (encoding, index build, training set, evaluation).

On a terminal a bar redraws twice a second; in a log file (CI, ``nohup``) it writes a line every 30 s at most, so a
long step still shows it is alive without flooding the log. ``RECSYS_PROGRESS=0`` turns every bar off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def bars_enabled() -> bool:
    return os.environ.get("RECSYS_PROGRESS", "1").strip().lower() not in {"0", "false", "no", "off"}


def progress(
    iterable: Iterable[T] | None = None, *, desc: str, total: int | None = None, unit: str = "it",
    stream: IO[str] | None = None,
) -> tqdm[T]:  # fmt: skip
    """A bar over ``iterable`` (or one to ``update`` by hand when None); ``stream`` defaults to stderr."""
    out: Any = stream if stream is not None else sys.stderr
    interactive = bool(getattr(out, "isatty", lambda: False)())
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=out, disable=not bars_enabled(),
                mininterval=0.5 if interactive else 30.0, dynamic_ncols=interactive, leave=True)  # fmt: skip
