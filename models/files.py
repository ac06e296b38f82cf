"""Files every part of the platform writes and checks: atomic writes, checksums, and the error naming a bad artifact.

A reader never sees a half-written file: everything is written beside its target under a unique temporary name and
then renamed into place (one ``os.replace``, atomic on POSIX file systems).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class ArtifactError(RuntimeError):
    """A published artifact is missing, corrupt or inconsistent; the message names the file and the check."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _staging_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(staging_path)``, then rename the staging file onto ``path``; nothing is left on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(path)
    try:
        write(staging)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return path


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    return write_atomic(path, lambda staging: frame.to_parquet(staging, index=False))


def write_json(content: Any, path: Path) -> Path:
    return write_atomic(path, lambda staging: staging.write_text(json.dumps(content, indent=2, default=str) + "\n"))


def write_npy(array: np.ndarray, path: Path) -> Path:
    def save(staging: Path) -> None:
        with open(staging, "wb") as handle:  # np.save on a path would append '.npy' to the staging name
            np.save(handle, array, allow_pickle=False)

    return write_atomic(path, save)


@contextmanager
def replacing_folder(folder: Path) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces ``folder`` whole, on failure it is removed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        if folder.exists():
            retired = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            folder.rename(retired)
            staging.rename(folder)
            shutil.rmtree(retired)
        else:
            staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def first_build_wins(folder: Path, marker: str) -> Iterator[Path]:
    """Yield a staging folder beside ``folder``, renamed to it on success: a crash never leaves a half-built
    folder behind, and when another process renamed its own first (``folder/marker`` exists) this one's build is
    dropped, not an error (workers building the same cache folder at once)."""
    staging = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:6]}")
    staging.mkdir(parents=True)
    try:
        yield staging
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / marker).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
