"""Choosing a text-encoder backend by name (``Settings.embedding_backend``), and the quality check that lets the
fast int8 backend replace the reference one on a given catalogue (``auto``)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.text.model import EMBEDDING_BACKENDS, TextEncoder

AUTO = "auto"
REFERENCE, FAST, STATIC = "torch", "onnx-int8", "static"


def make_encoder(backend: str = "torch", threads: int | None = None, cache_dir: Path | None = None) -> TextEncoder:
    """The encoder for a backend name; ``onnx-int8`` and ``static`` build (once) or load their model under
    ``cache_dir``."""
    if backend == "torch":
        from models.text.torch_encoder import SentenceTransformerEncoder

        return SentenceTransformerEncoder(threads=threads)
    if backend == "onnx-int8":
        from models.text.onnx_int8 import OnnxInt8Encoder

        if cache_dir is None:
            raise ValueError("the 'onnx-int8' backend needs a cache folder for its built model")
        return OnnxInt8Encoder(cache_dir, threads=threads)
    if backend == STATIC:
        from models.text.static_tokens import StaticTokenEncoder

        if cache_dir is None:
            raise ValueError("the 'static' backend needs a cache folder for its token table")
        return StaticTokenEncoder(cache_dir)
    if backend == AUTO:
        raise ValueError("'auto' is resolved per catalogue by choose_backend() before an encoder is made")
    raise ValueError(f"unknown embedding backend '{backend}', expected one of {', '.join(EMBEDDING_BACKENDS)}")


def bundle_encoder(backend: str, cache_dir: Path, folder: Path) -> None:
    """Copy a built encoder model (the int8 ONNX graph or the static token table, with its tokenizer) from the
    cache into ``folder``, which then serves as that encoder's cache: a published version carries the exact model
    its vectors were made with, and a service (or a bento) loads it instead of building it at start. Nothing to
    copy for ``torch``."""
    if backend == FAST:
        from models.text import onnx_int8 as built_model
    elif backend == STATIC:
        from models.text import static_tokens as built_model  # type: ignore[no-redef]
    else:
        return
    source, target = built_model.encoder_folder(cache_dir), built_model.encoder_folder(folder)
    target.mkdir(parents=True, exist_ok=True)
    for name in built_model.MODEL_FILES:
        shutil.copy2(source / name, target / name)


@dataclass(frozen=True)
class BackendChoice:
    """The backend a catalogue is embedded with, and the evidence: cosine of the int8 vectors to the reference
    vectors on a seeded sample of the catalogue's own texts (None when no check ran)."""

    backend: str
    reason: str
    texts: int = 0
    min_cosine: float | None = None
    mean_cosine: float | None = None
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sample_texts(texts: Sequence[str], size: int, seed: int) -> list[str]:
    """A seeded sample, with the longest and the shortest texts always in (where int8 errors are largest)."""
    if len(texts) <= size:
        return list(texts)
    by_length = np.argsort([len(text) for text in texts], kind="stable")
    ends = max(1, size // 8)
    fixed = np.concatenate([by_length[:ends], by_length[-ends:]])
    rest = np.setdiff1d(np.arange(len(texts)), fixed)
    drawn = np.random.default_rng(seed).choice(rest, size=size - len(fixed), replace=False)
    return [texts[row] for row in np.sort(np.concatenate([fixed, drawn]))]


def choose_backend(
    requested: str, texts: Sequence[str], cache_dir: Path, threads: int | None, sample: int, min_cosine: float,
    seed: int,
) -> BackendChoice:  # fmt: skip
    """``auto``: the int8 backend (~2.4-3x the texts/s) when, on a sample of these texts, every vector is within
    ``min_cosine`` of the reference's; the reference otherwise. Any other name is taken as asked."""
    if requested != AUTO:
        return BackendChoice(requested, "set explicitly")
    started = time.perf_counter()
    checked = sample_texts(texts, sample, seed)
    reference = make_encoder(REFERENCE, threads=threads).encode(checked)
    fast = make_encoder(FAST, threads=threads, cache_dir=cache_dir).encode(checked)
    cosine = np.sum(reference * fast, axis=1)  # both L2-normalised
    low, mean = float(cosine.min()), float(cosine.mean())
    passed = low >= min_cosine
    verdict = "passes" if passed else "fails"
    reason = (
        f"int8 {verdict} the check: min cosine {low:.4f} to torch on {len(checked)} catalogue texts (need {min_cosine})"
    )
    return BackendChoice(FAST if passed else REFERENCE, reason, len(checked), low, mean,
                         round(time.perf_counter() - started, 1))  # fmt: skip
