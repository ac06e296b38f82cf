"""Choosing a text-encoder backend by name (``Settings.embedding_backend``)."""

from __future__ import annotations

from pathlib import Path

from models.text.model import EMBEDDING_BACKENDS, TextEncoder


def make_encoder(backend: str = "torch", threads: int | None = None, cache_dir: Path | None = None) -> TextEncoder:
    """The encoder for a backend name; ``onnx-int8`` builds (once) or loads its model under ``cache_dir``."""
    if backend == "torch":
        from models.text.torch_encoder import SentenceTransformerEncoder

        return SentenceTransformerEncoder(threads=threads)
    if backend == "onnx-int8":
        from models.text.onnx_int8 import OnnxInt8Encoder

        if cache_dir is None:
            raise ValueError("the 'onnx-int8' backend needs a cache folder for its built model")
        return OnnxInt8Encoder(cache_dir, threads=threads)
    raise ValueError(f"unknown embedding backend '{backend}', expected one of {', '.join(EMBEDDING_BACKENDS)}")
