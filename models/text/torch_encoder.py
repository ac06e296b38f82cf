"""The reference backend: sentence-transformers on PyTorch, CPU, loaded by path with the hub switched off."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.text.model import EMBEDDING_DIM, bundled_model_path, encoder_name


class SentenceTransformerEncoder:
    """all-MiniLM-L6-v2 through sentence-transformers (backend ``torch``)."""

    def __init__(self, model_path: Path | None = None, threads: int | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(model_path or bundled_model_path()), device="cpu")
        self.name = encoder_name("torch")
        self.dim = int(self.model.get_embedding_dimension() or EMBEDDING_DIM)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
