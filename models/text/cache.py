"""Item text vectors, cached by (model, text) hash so unchanged texts are never encoded twice.

Vectors are kept as numpy shards under the cache folder; a pipeline step's vectors go to one file named by the
hash of all its texts, so a re-run with the same catalogue reuses them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from models.data import columns as C
from models.files import write_npy
from models.progress import progress as progress_bar
from models.text.model import TextEncoder, item_texts


def text_key(model: str, text: str) -> str:
    return hashlib.sha1(f"{model}\x00{text}".encode()).hexdigest()


class EmbeddingCache:
    """Vectors keyed by (model, text) hash, stored as numpy shards; unchanged texts are never re-encoded."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._vectors: dict[str, np.ndarray] = {}
        for keys_file in sorted(self.folder.glob("*.keys.npy")):
            vectors_file = keys_file.with_name(keys_file.name.replace(".keys.npy", ".vectors.npy"))
            if not vectors_file.exists():
                continue  # a shard whose write was interrupted
            keys = np.load(keys_file, allow_pickle=False)
            vectors = np.load(vectors_file, allow_pickle=False)
            self._vectors.update(zip(keys.tolist(), vectors, strict=True))

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, key: str) -> np.ndarray | None:
        return self._vectors.get(key)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Write one new shard; the keys file is written last so a crash leaves no half shard behind."""
        if not len(keys):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        shard = uuid.uuid4().hex[:12]
        np.save(self.folder / f"{shard}.vectors.npy", vectors.astype(np.float32), allow_pickle=False)
        np.save(self.folder / f"{shard}.keys.npy", np.asarray(keys, dtype=str), allow_pickle=False)
        self._vectors.update(zip(keys, vectors, strict=True))


def embed_texts(
    texts: Sequence[str],
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    chunk: int = 2048,
    progress: bool = True,
) -> tuple[np.ndarray, int]:
    """Vectors for ``texts`` (rows in order) and how many had to be encoded; the rest come from the cache."""
    keys = [text_key(encoder.name, text) for text in texts]
    vectors = np.empty((len(texts), encoder.dim), dtype=np.float32)
    missing: list[int] = []
    for row, key in enumerate(keys):
        cached = cache.get(key) if cache is not None else None
        if cached is None:
            missing.append(row)
        else:
            vectors[row] = cached
    # encode longest texts together to cut padding, then put rows back in place
    missing.sort(key=lambda row: len(texts[row]))
    bar = progress_bar(desc="embedding items", total=len(missing), unit="text") if progress and missing else None
    for start in range(0, len(missing), chunk):
        rows = missing[start : start + chunk]
        encoded = encoder.encode([texts[r] for r in rows], batch_size=batch_size)
        vectors[rows] = encoded
        if cache is not None:
            cache.add([keys[r] for r in rows], encoded)
        if bar is not None:
            bar.update(len(rows))
    if bar is not None:
        bar.close()
    return vectors, len(missing)


def texts_digest(encoder_name: str, texts: Sequence[str]) -> str:
    digest = hashlib.sha256(encoder_name.encode())
    for text in texts:
        digest.update(text.encode() + b"\x00")
    return digest.hexdigest()[:24]


def read_item_texts(items_path: Path) -> list[str]:
    return item_texts(pd.read_parquet(items_path, columns=[C.ITEM_ID, C.TITLE, C.DESCRIPTION]))


def embed_items_to_file(
    items_path: Path, encoder: TextEncoder, cache: EmbeddingCache, out_dir: Path, batch_size: int = 64
) -> tuple[Path, int]:
    """Embed the items of a saved dataset into ``out_dir/<hash of texts>.npy``; returns (path, texts encoded)."""
    texts = read_item_texts(items_path)
    path = out_dir / f"{texts_digest(encoder.name, texts)}.npy"
    if path.exists():
        return path, 0
    vectors, encoded = embed_texts(texts, encoder, cache, batch_size=batch_size)
    return write_npy(vectors, path), encoded


def embed_item_range(
    items_path: Path, start: int, stop: int, encoder: TextEncoder, cache: EmbeddingCache, batch_size: int = 64
) -> np.ndarray:
    """Vectors of items ``start:stop``: one shard of a distributed embedding run."""
    texts = read_item_texts(items_path)[start:stop]
    return embed_texts(texts, encoder, cache, batch_size=batch_size, progress=False)[0]
