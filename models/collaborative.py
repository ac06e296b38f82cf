"""Collaborative embeddings of users and items learned from the interaction graph (implicit ALS).

Scores are inner products user · item. Users unseen at training time get a vector by fold-in: the same
least-squares step ALS uses, solved against the fixed item factors. For FAISS, item vectors are lifted to
unit length with one extra coordinate (the MIPS → cosine reduction), so inner-product search over normalised
vectors returns exactly the ALS ranking.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models import columns as C


@dataclass(frozen=True)
class AlsParams:
    factors: int = 64
    regularization: float = 0.05
    iterations: int = 20
    alpha: float = 1.0
    negative_weight: float | None = 0.3
    """Confidence of non-positive interactions (positives: 1); None trains on binary interactions."""
    seed: int = 42


def interaction_matrix(
    interactions: pd.DataFrame,
    user_ids: Sequence[str] | np.ndarray,
    item_ids: Sequence[str] | np.ndarray,
    binary: bool = True,
) -> sp.csr_matrix:
    """Users × items CSR of summed weights (or 1 where any interaction exists when ``binary``)."""
    user_index = pd.Index(user_ids)
    item_index = pd.Index(item_ids)
    rows = user_index.get_indexer(interactions[C.USER_ID])
    cols = item_index.get_indexer(interactions[C.ITEM_ID])
    keep = (rows >= 0) & (cols >= 0)
    values = np.ones(keep.sum(), np.float32) if binary else interactions[C.WEIGHT].to_numpy(np.float32)[keep]
    matrix = sp.csr_matrix((values, (rows[keep], cols[keep])), shape=(len(user_index), len(item_index)))
    matrix.sum_duplicates()
    if binary:
        matrix.data[:] = 1.0
    return matrix


@dataclass
class CollaborativeModel:
    """Item factors (and the training users' factors) of an ALS model, with fold-in for any item history."""

    item_ids: np.ndarray
    item_factors: np.ndarray
    user_ids: np.ndarray
    user_factors: np.ndarray
    regularization: float
    alpha: float

    def __post_init__(self) -> None:
        self._user_row = pd.Index(self.user_ids)
        self._item_row = pd.Index(self.item_ids)
        self._gram = self.item_factors.T @ self.item_factors

    @property
    def dim(self) -> int:
        return int(self.item_factors.shape[1])

    def user_vector(self, user_id: str) -> np.ndarray | None:
        """The trained vector of a user, or None for a user unseen at training time."""
        row = self._user_row.get_indexer([user_id])[0]
        return None if row < 0 else self.user_factors[row]

    def fold_in(self, item_ids: Sequence[str], weights: Sequence[float] | None = None) -> np.ndarray:
        """A user vector from an item history: solve (YᵀY + Yᵀ(Cᵤ−I)Y + λI)x = YᵀCᵤ1 with Cᵤ = α·weight."""
        rows = self._item_row.get_indexer(list(item_ids))
        known = rows >= 0
        factors = np.zeros(self.dim, dtype=np.float32)
        if not known.any():
            return factors
        weight = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
        rows, weight = rows[known], weight[known]
        # repeated items add up, as in the training matrix
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        confidence = self.alpha * np.bincount(inverse, weights=weight)
        y = self.item_factors[unique_rows].astype(np.float64)
        a = self._gram + self.regularization * np.eye(self.dim) + (y.T * (confidence - 1.0)) @ y
        b = y.T @ confidence
        return np.linalg.solve(a, b).astype(np.float32)

    def scores(self, user_vector: np.ndarray) -> np.ndarray:
        return self.item_factors @ user_vector

    def save(self, folder: Path) -> dict[str, object]:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "item_factors.npy", self.item_factors, allow_pickle=False)
        np.save(folder / "user_factors.npy", self.user_factors, allow_pickle=False)
        np.save(folder / "item_ids.npy", self.item_ids.astype(str), allow_pickle=False)
        np.save(folder / "user_ids.npy", self.user_ids.astype(str), allow_pickle=False)
        return {"factors": self.dim, "regularization": self.regularization, "alpha": self.alpha}

    @classmethod
    def load(cls, folder: Path, section: dict[str, object]) -> CollaborativeModel:
        def read(name: str) -> np.ndarray:
            return np.load(folder / name, allow_pickle=False)

        model = cls(
            item_ids=read("item_ids.npy"),
            item_factors=read("item_factors.npy"),
            user_ids=read("user_ids.npy"),
            user_factors=read("user_factors.npy"),
            regularization=float(section["regularization"]),  # type: ignore[arg-type]
            alpha=float(section["alpha"]),  # type: ignore[arg-type]
        )
        if model.dim != section["factors"]:
            raise ValueError(f"{folder}: item factors have {model.dim} columns, manifest says {section['factors']}")
        return model


def fit_als(
    interactions: pd.DataFrame, item_ids: Sequence[str], params: AlsParams, threads: int = 0
) -> CollaborativeModel:
    """Fit implicit's ALS on binary user × item interactions."""
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    user_ids = np.array(sorted(interactions[C.USER_ID].unique()), dtype=str)
    if params.negative_weight is None:
        matrix = interaction_matrix(interactions, user_ids, item_ids)
    else:
        matrix = confidence_matrix(interactions, user_ids, item_ids, params.negative_weight)
    # implicit's own threads do the work; BLAS threads would oversubscribe (its warning says the same)
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="OpenBLAS is configured", category=RuntimeWarning)
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            iterations=params.iterations,
            alpha=params.alpha,
            random_state=params.seed,
            num_threads=threads,
            calculate_training_loss=False,
        )
        model.fit(matrix, show_progress=False)
    return CollaborativeModel(
        item_ids=np.asarray(item_ids, dtype=str),
        item_factors=np.ascontiguousarray(model.item_factors, dtype=np.float32),
        user_ids=user_ids,
        user_factors=np.ascontiguousarray(model.user_factors, dtype=np.float32),
        regularization=params.regularization,
        alpha=params.alpha,
    )


def mips_item_vectors(item_factors: np.ndarray) -> tuple[np.ndarray, float]:
    """Lift item vectors to unit length: [y, sqrt(M² − |y|²)] / M, where M is the largest norm."""
    norms = np.linalg.norm(item_factors, axis=1)
    max_norm = float(norms.max()) if len(norms) else 1.0
    max_norm = max_norm or 1.0
    extra = np.sqrt(np.clip(max_norm**2 - norms**2, 0.0, None))
    lifted = np.hstack([item_factors, extra[:, None]]) / max_norm
    return np.ascontiguousarray(lifted, dtype=np.float32), max_norm


def mips_query(user_vector: np.ndarray) -> np.ndarray:
    """The matching query: [x, 0], normalised (a positive scale keeps the ranking)."""
    norm = float(np.linalg.norm(user_vector)) or 1.0
    return np.append(user_vector / norm, 0.0).astype(np.float32)


def confidence_matrix(
    interactions: pd.DataFrame, user_ids: Sequence[str] | np.ndarray, item_ids: Sequence[str] | np.ndarray,
    negative_weight: float = 0.3,
) -> sp.csr_matrix:  # fmt: skip
    """Users × items: 1 where the user had a positive interaction with the item, ``negative_weight`` where only
    weaker ones (views, low ratings). A weak signal still says "seen and considered"."""
    from models.splits import is_positive

    user_index, item_index = pd.Index(user_ids), pd.Index(item_ids)
    rows = user_index.get_indexer(interactions[C.USER_ID])
    cols = item_index.get_indexer(interactions[C.ITEM_ID])
    values = np.where(is_positive(interactions).to_numpy(), 1.0, negative_weight).astype(np.float32)
    keep = (rows >= 0) & (cols >= 0)
    frame = pd.DataFrame({"r": rows[keep], "c": cols[keep], "v": values[keep]}).groupby(["r", "c"])["v"].max()
    r, c = frame.index.get_level_values(0), frame.index.get_level_values(1)
    return sp.csr_matrix((frame.to_numpy(np.float32), (r, c)), shape=(len(user_index), len(item_index)))


def rp3beta_table(
    interactions: pd.DataFrame, item_ids: Sequence[str] | np.ndarray, alpha: float = 1.0, beta: float = 0.5,
    top_m: int = 200, block: int = 2048,
) -> sp.csr_matrix:  # fmt: skip
    """Item × item transition scores of a 3-step random walk item → user → item on the interaction graph,
    raised to ``alpha`` and divided by the target's popularity^``beta`` (RP3beta); top ``top_m`` per item kept.

    Computed in row blocks so memory stays O(block × items)."""
    user_ids = np.array(sorted(interactions[C.USER_ID].unique()), dtype=str)
    binary = interaction_matrix(interactions, user_ids, item_ids)
    degree = np.asarray(binary.sum(axis=0)).ravel()
    user_to_item = sp.diags(1.0 / np.maximum(np.asarray(binary.sum(axis=1)).ravel(), 1.0)) @ binary
    item_to_user = (sp.diags(1.0 / np.maximum(degree, 1.0)) @ binary.T).tocsr()
    penalty = 1.0 / np.power(np.maximum(degree, 1.0), beta)
    n_items = binary.shape[1]
    parts = []
    for start in range(0, n_items, block):
        walk = (item_to_user[start : start + block] @ user_to_item).toarray()
        if alpha != 1.0:
            walk = np.power(walk, alpha)
        walk *= penalty[None, :]
        rows = np.arange(walk.shape[0])
        walk[rows, start + rows] = 0.0  # no self-loops
        m = min(top_m, n_items - 1)
        top = np.argpartition(-walk, m, axis=1)[:, :m] if m < n_items else np.tile(np.arange(n_items), (len(rows), 1))
        values = np.take_along_axis(walk, top, axis=1)
        keep = values > 0
        parts.append(sp.csr_matrix((values[keep], (np.repeat(rows, m)[keep.ravel()], top[keep])),
                                   shape=(walk.shape[0], n_items)))  # fmt: skip
    return sp.vstack(parts).tocsr().astype(np.float32)
