"""Handing freed memory back to the operating system.

glibc keeps freed heap memory for reuse: mid-size blocks (a few MB: the co-occurrence table's pruned blocks, pandas
intermediates) are served from the heap once its dynamic mmap threshold has risen, and freeing them leaves the
pages resident. At 1 M items the co-occurrence build alone left 1.75 GB resident beyond its 1.83 GB table, and the
re-ranker's tasks run one after another in one process, so what one step freed but kept adds to the next step's
peak. ``malloc_trim(0)`` returns every free page of every arena; it changes no value.

Arrow (which reads every Parquet file) allocates from its own pool (mimalloc), which keeps freed pages resident too:
loading the 1 M-item dataset (15 M events) left 1.3 GB there after its tables had become pandas frames, dead weight
through the whole step, since numpy and pandas allocate from glibc. ``release_unused`` hands those back as well.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyarrow


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_free_memory() -> None:
    """Return the free pages of the heap (glibc only; elsewhere a no-op) and of Arrow's memory pool to the OS."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    pyarrow.default_memory_pool().release_unused()
