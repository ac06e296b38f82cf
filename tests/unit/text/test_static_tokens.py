"""The static token-table encoder (backend ``static``): built from the bundled model, batch-invariant, carried by a
version, and a broken table is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.text import static_tokens
from models.text.encoders import bundle_encoder, make_encoder
from models.text.static_tokens import RECIPE, StaticTableError, StaticTokenEncoder, encoder_folder

TEXTS = [
    "Waterproof hiking boots with a padded collar",
    "Trail running shoes with a grippy sole",
    "Toy Story (1995). Adventure, Animation, Children, Comedy, Fantasy",
    "Finding Nemo (2003). Adventure, Animation, Children, Comedy",
    "Stainless steel kettle, 1.7 litres, fast boil",
    "",
    "x",
]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> StaticTokenEncoder:
    built = make_encoder("static", cache_dir=tmp_path_factory.mktemp("cache"))
    assert isinstance(built, StaticTokenEncoder)
    return built


def test_vectors_are_normalised_and_semantic(encoder: StaticTokenEncoder) -> None:
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # the empty text too ([UNK])
    boots, shoes, toy_story, nemo, kettle = vectors[:5]
    assert float(boots @ shoes) > float(boots @ toy_story)  # footwear is closer to footwear than to a film
    assert float(toy_story @ nemo) > float(toy_story @ kettle)
    assert encoder.name.endswith(f"static:{RECIPE}") and encoder.encode([]).shape == (0, 384)


def test_a_text_s_vector_does_not_depend_on_its_batch(encoder: StaticTokenEncoder) -> None:
    """What lets shards encoded on a cluster equal a local run exactly (the int8 backend agrees only to ~0.999)."""
    texts = [f"{text} {i}" for i in range(40) for text in TEXTS]
    whole = encoder.encode(texts)
    pieces = np.vstack([encoder.encode(texts[start : start + 13]) for start in range(0, len(texts), 13)])
    np.testing.assert_array_equal(whole, pieces)
    np.testing.assert_array_equal(encoder.encode(list(reversed(texts))), whole[::-1])


def test_the_table_is_the_model_s_pooled_output_for_each_token(encoder: StaticTokenEncoder) -> None:
    """One row checked against the transformer itself: the token alone between [CLS] and [SEP], mean-pooled."""
    from models.text.torch_encoder import SentenceTransformerEncoder

    token = encoder.tokenizer.token_to_id("kettle")
    reference = SentenceTransformerEncoder(threads=1).model
    pooled = reference.encode(["kettle"], convert_to_numpy=True)[0]  # [CLS] kettle [SEP], mean-pooled, normalised
    row = encoder.table[token]
    np.testing.assert_allclose(row / np.linalg.norm(row), pooled, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(["kettle"])[0], pooled, atol=1e-5)


def test_a_bundled_table_is_loaded_not_rebuilt(
    encoder: StaticTokenEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle_encoder("static", encoder.folder.parents[1], tmp_path)

    def no_build(*_args: object, **_kwargs: object) -> Path:
        raise AssertionError("a carried table must not be rebuilt")

    monkeypatch.setattr(static_tokens, "build_token_table", no_build)
    carried = StaticTokenEncoder(tmp_path)
    assert (encoder_folder(tmp_path) / "build.json").read_text() == (encoder.folder / "build.json").read_text()
    np.testing.assert_array_equal(carried.encode(TEXTS), encoder.encode(TEXTS))


def test_a_corrupt_table_is_named(encoder: StaticTokenEncoder, tmp_path: Path) -> None:
    bundle_encoder("static", encoder.folder.parents[1], tmp_path)
    table = encoder_folder(tmp_path) / "tokens.npy"
    table.write_bytes(b"not a numpy file")
    with pytest.raises(StaticTableError, match=str(table.parent)):
        StaticTokenEncoder(tmp_path)
    np.save(table, np.zeros((10, 3), dtype=np.float32))
    with pytest.raises(StaticTableError, match="expected \\(tokens, 384\\)"):
        StaticTokenEncoder(tmp_path)
