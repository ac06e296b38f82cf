"""Text encoders (PyTorch and the int8 ONNX build) and the content-hash embedding cache."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from models.text.cache import EmbeddingCache, embed_texts
from models.text.encoders import bundle_encoder, choose_backend, make_encoder, sample_texts
from models.text.model import bundled_model_path
from models.text.onnx_int8 import RECIPE, OnnxBuildError, OnnxInt8Encoder, calibration_texts, encoder_folder
from models.text.torch_encoder import SentenceTransformerEncoder

TEXTS = [
    "Waterproof hiking boots with a padded collar",
    "Toy Story (1995). Adventure, Animation, Children, Comedy, Fantasy",
    "Heat (1995). Action, Crime, Thriller",
    "Stainless steel kettle, 1.7 litres, fast boil. A quiet kitchen classic with a limescale filter and an "
    "auto shut-off that customers rate highly for everyday use.",
    "Nosferatu (Nosferatu, eine Symphonie des Grauens) (1922). Horror",
    "x",
]


@pytest.fixture(scope="module")
def torch_encoder() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(threads=1)


@pytest.fixture(scope="module")
def onnx_encoder(tmp_path_factory: pytest.TempPathFactory) -> OnnxInt8Encoder:
    return OnnxInt8Encoder(tmp_path_factory.mktemp("cache"), threads=2)


class CountingEncoder:
    """Wraps a real encoder and counts the texts it was asked to encode."""

    def __init__(self, inner: SentenceTransformerEncoder):
        self.inner, self.name, self.dim, self.encoded = inner, inner.name, inner.dim, 0

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        self.encoded += len(texts)
        return self.inner.encode(texts, batch_size)


def test_torch_vectors_are_normalised_and_semantic(torch_encoder: SentenceTransformerEncoder) -> None:
    vectors = torch_encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    boots, toy_story, heat = vectors[:3]
    assert float(toy_story @ heat) > float(toy_story @ boots)  # two films are closer than a film and boots


def test_cache_encodes_only_new_texts(tmp_path: Path, torch_encoder: SentenceTransformerEncoder) -> None:
    counting = CountingEncoder(torch_encoder)
    first, encoded = embed_texts(TEXTS[:4], counting, EmbeddingCache(tmp_path), progress=False)
    assert encoded == 4
    reopened = EmbeddingCache(tmp_path)  # from disk, as the next pipeline run sees it
    second, encoded = embed_texts(TEXTS, counting, reopened, progress=False)
    assert encoded == 2 and counting.encoded == 6
    np.testing.assert_array_equal(second[:4], first)


def test_onnx_int8_agrees_with_torch(onnx_encoder: OnnxInt8Encoder, torch_encoder: SentenceTransformerEncoder) -> None:
    reference = torch_encoder.encode(TEXTS)
    vectors = onnx_encoder.encode(TEXTS, batch_size=2)  # several batches, run concurrently, rows back in order
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    cosine = np.einsum("ij,ij->i", vectors, reference)
    assert cosine.min() >= 0.99, cosine
    assert onnx_encoder.encode([]).shape == (0, 384)
    assert RECIPE in onnx_encoder.name and onnx_encoder.name != torch_encoder.name  # separate cache keys


def test_onnx_model_is_built_once(onnx_encoder: OnnxInt8Encoder, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = onnx_encoder.folder
    built = (folder / "model.onnx").stat().st_mtime_ns
    OnnxInt8Encoder(folder.parent.parent, threads=1)
    assert (folder / "model.onnx").stat().st_mtime_ns == built
    assert not list(folder.parent.glob("*.tmp-*"))  # no staging folder left behind


def test_corrupt_onnx_model_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "encoders" / RECIPE
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"not a model")
    (folder / "tokenizer.json").write_text((bundled_model_path() / "tokenizer.json").read_text())
    with pytest.raises(OnnxBuildError, match=str(folder / "model.onnx")):
        OnnxInt8Encoder(tmp_path, threads=1)


def test_calibration_texts_are_deterministic() -> None:
    texts = calibration_texts(60)
    assert texts == calibration_texts(60) and len(texts) == 60
    assert min(map(len, texts)) < 40 < max(map(len, texts))  # short and long texts


def test_unknown_backend_and_missing_cache_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend 'gpu'"):
        make_encoder("gpu")
    with pytest.raises(ValueError, match="needs a cache folder"):
        make_encoder("onnx-int8")
    with pytest.raises(ValueError, match="'auto' is resolved per catalogue"):
        make_encoder("auto")


def test_auto_takes_int8_only_when_it_passes_on_the_catalogue_texts(onnx_encoder: OnnxInt8Encoder) -> None:
    cache = onnx_encoder.folder.parents[1]  # the fixture's built model: no second build
    texts = calibration_texts(90)
    passed = choose_backend("auto", texts, cache, threads=1, sample=40, min_cosine=0.99, seed=1)
    assert passed.backend == "onnx-int8" and passed.texts == 40, passed
    assert passed.min_cosine is not None and passed.mean_cosine is not None
    assert 0.99 <= passed.min_cosine <= passed.mean_cosine <= 1.0 + 1e-6 and "passes" in passed.reason
    strict = choose_backend("auto", texts, cache, threads=1, sample=40, min_cosine=0.99999, seed=1)
    assert strict.backend == "torch" and "fails" in strict.reason and strict.min_cosine == passed.min_cosine
    explicit = choose_backend("torch", texts, cache, threads=1, sample=40, min_cosine=0.99, seed=1)
    assert explicit.backend == "torch" and explicit.min_cosine is None  # no check when the backend is named


def test_the_checked_sample_is_seeded_and_holds_the_extremes() -> None:
    texts = [f"item {i}" + " word" * ((i * 7) % 500) for i in range(500)]  # every length once, shuffled
    sample = sample_texts(texts, 64, seed=3)
    assert len(sample) == len(set(sample)) == 64 and sample == sample_texts(texts, 64, seed=3)
    assert min(texts, key=len) in sample and max(texts, key=len) in sample
    assert sample_texts(texts[:10], 64, seed=3) == texts[:10]


def test_a_bundled_int8_model_is_loaded_not_rebuilt(onnx_encoder: OnnxInt8Encoder, tmp_path: Path) -> None:
    bundle_encoder("onnx-int8", onnx_encoder.folder.parents[1], tmp_path)
    carried = OnnxInt8Encoder(tmp_path, threads=1)
    assert not (encoder_folder(tmp_path) / "fp32.onnx").exists()
    built = (encoder_folder(tmp_path) / "build.json").read_text()
    assert built == (onnx_encoder.folder / "build.json").read_text()  # the same build, copied
    np.testing.assert_array_equal(carried.encode(TEXTS), onnx_encoder.encode(TEXTS))
    bundle_encoder("torch", onnx_encoder.folder.parents[1], tmp_path / "none")
    assert not (tmp_path / "none").exists()  # nothing to carry for the reference backend
