"""ALS embeddings: fold-in matches implicit's own recalculation, MIPS lifting keeps the ALS ranking, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.data import columns as C
from models.retrieval.als import AlsParams, CollaborativeModel, fit_als, mips_item_vectors, mips_query
from models.retrieval.matrices import interaction_matrix


def two_taste_interactions(seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Half the users like items a*, half like items b*."""
    rng = np.random.default_rng(seed)
    items = [f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)]
    rows = []
    for u in range(60):
        group = "a" if u < 30 else "b"
        for i in rng.choice(20, size=8, replace=False):
            rows.append((f"u{u}", f"{group}{i}"))
    frame = pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID])
    frame[C.TIMESTAMP] = pd.Timestamp("2025-01-01", tz="UTC")
    frame[C.WEIGHT] = 1.0
    return frame, items


@pytest.fixture(scope="module")
def model() -> CollaborativeModel:
    frame, items = two_taste_interactions()
    params = AlsParams(factors=8, iterations=10, regularization=0.1, alpha=2.0, seed=42)
    return fit_als(frame, items, params, threads=1)


def test_users_get_their_own_taste(model: CollaborativeModel):
    scores = model.scores(model.user_vector("u0"))
    top = model.item_ids[np.argsort(-scores)[:10]]
    assert all(item.startswith("a") for item in top)
    assert model.user_vector("nobody") is None


def test_fold_in_matches_implicit_recalculate_user(model: CollaborativeModel):
    from implicit.als import AlternatingLeastSquares

    history = ["b1", "b2", "b3", "b2"]
    reference = AlternatingLeastSquares(factors=8, regularization=0.1, alpha=2.0)
    reference.item_factors = model.item_factors
    reference.user_factors = model.user_factors
    row = pd.DataFrame({C.USER_ID: ["x"] * 4, C.ITEM_ID: history, C.WEIGHT: 1.0})
    matrix = interaction_matrix(row, ["x"], list(model.item_ids), binary=False)
    expected = reference.recalculate_user(0, matrix)
    np.testing.assert_allclose(model.fold_in(history), expected, rtol=1e-3, atol=1e-4)
    scores = model.scores(model.fold_in(history))
    is_b = np.char.startswith(model.item_ids.astype(str), "b")
    assert scores[is_b].mean() > scores[~is_b].mean() + 0.1


def test_fold_in_of_unknown_items_is_zero(model: CollaborativeModel):
    assert not model.fold_in(["zzz"]).any()


def test_mips_lifting_preserves_the_inner_product_ranking():
    rng = np.random.default_rng(1)
    items = rng.normal(size=(200, 6)) * rng.uniform(0.1, 3.0, size=(200, 1))
    user = rng.normal(size=6)
    lifted, _ = mips_item_vectors(items.astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(lifted, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.argsort(-(lifted @ mips_query(user)))[:50], np.argsort(-(items @ user))[:50])


def test_mips_vectors_are_padded_for_simd_and_queries_match_older_indexes():
    rng = np.random.default_rng(2)
    items = rng.normal(size=(50, 64)).astype(np.float32)
    lifted, _ = mips_item_vectors(items)
    assert lifted.shape == (50, 80) and not lifted[:, 65:].any()
    user = rng.normal(size=64)
    assert mips_query(user).shape == (80,)
    legacy = mips_query(user, 65)  # a version published before the padding: factors + the lift
    np.testing.assert_array_equal(legacy, mips_query(user)[:65])
    np.testing.assert_allclose(lifted[:, :65] @ legacy, lifted @ mips_query(user), rtol=1e-6)


def test_save_load_round_trip(model: CollaborativeModel, tmp_path: Path):
    section = model.save(tmp_path)
    again = CollaborativeModel.load(tmp_path, section)
    np.testing.assert_array_equal(again.item_factors, model.item_factors)
    np.testing.assert_allclose(again.fold_in(["a1", "a2"]), model.fold_in(["a1", "a2"]))
    with pytest.raises(ValueError, match="manifest says 9"):
        CollaborativeModel.load(tmp_path, {**section, "factors": 9})
