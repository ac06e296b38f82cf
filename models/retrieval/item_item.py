"""Item-to-item models learned from the user × item matrix: EASE^R, RP3beta and item-kNN (cosine).

Each gives an item × item weight matrix ``W``; a user's score for every item is ``x_u · W`` where ``x_u`` marks the
items the user interacted with. Fitted dense over the catalogue's most frequent items (``max_items``: memory grows
with its square), they are the exact single-stage peers of the evaluation; pruned to each item's strongest
``neighbours``, the same weights are a stage-1 source (``ItemItemSource``) that a published version serves.

- EASE^R (Steck 2019): ``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹``, zero diagonal; one hyperparameter ``l2``.
- RP3beta (Paudel et al. 2017): 3-step random walk item → user → item, raised to ``alpha``, divided by the target's
  popularity^``beta``.
- item-kNN: cosine similarity of item columns with shrinkage ``shrink`` in the denominator.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg.lapack as lapack
import scipy.sparse as sp

from models.files import ArtifactError
from models.retrieval.sources import SourceResult, UserQuery, drop_excluded
from models.sparse import row_entries

ITEM_ITEM_KINDS = ("ease", "rp3beta", "item_knn")


@dataclass
class ItemItemModel:
    """Dense item × item weights over ``active`` catalogue rows (the rest score 0)."""

    kind: str
    weights: np.ndarray
    active: np.ndarray
    n_items: int
    params: dict[str, float]

    def scores(self, history: sp.csr_matrix) -> np.ndarray:
        """Scores of every catalogue item for each row of ``history`` (users × catalogue, weights of their items)."""
        out = np.zeros((history.shape[0], self.n_items), dtype=np.float32)
        out[:, self.active] = history[:, self.active] @ self.weights
        return out

    def table(self, neighbours: int, block: int = 2048) -> sp.csr_matrix:
        """The catalogue × catalogue table keeping each item's ``neighbours`` largest positive weights."""
        n_active = len(self.active)
        m = min(neighbours, max(n_active - 1, 1))
        rows, cols, values = [], [], []
        for start in range(0, n_active, block):
            part = self.weights[start : start + block]
            top = (
                np.argpartition(-part, m - 1, axis=1)[:, :m]
                if m < n_active
                else np.tile(np.arange(n_active), (len(part), 1))
            )
            picked = np.take_along_axis(part, top, axis=1)
            keep = picked > 0
            rows.append(np.repeat(self.active[start : start + len(part)], top.shape[1])[keep.ravel()])
            cols.append(self.active[top[keep]])
            values.append(picked[keep])
        table = sp.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(self.n_items, self.n_items)
        )
        return table.astype(np.float32)


def active_items(matrix: sp.csr_matrix, max_items: int) -> np.ndarray:
    """Catalogue rows with at least one interaction, the ``max_items`` most frequent if there are more (sorted)."""
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    active = np.flatnonzero(counts > 0)
    if len(active) > max_items:
        active = np.sort(active[np.argsort(-counts[active], kind="stable")[:max_items]])
    return active


def fit_item_item(kind: str, matrix: sp.csr_matrix, params: Mapping[str, float], max_items: int) -> ItemItemModel:
    """Fit one item-item model on a binary users × catalogue matrix."""
    active = active_items(matrix, max_items)
    binary = matrix[:, active].tocsc().astype(np.float32)
    if kind == "ease":
        weights = ease_weights(binary, float(params["l2"]))
    elif kind == "rp3beta":
        weights = rp3beta_weights(binary, float(params["alpha"]), float(params["beta"]))
    elif kind == "item_knn":
        weights = cosine_weights(binary, float(params["shrink"]))
        keep_strongest(weights, int(params.get("neighbours", 0)))
    else:
        raise ValueError(f"unknown item-item model '{kind}', expected one of {', '.join(ITEM_ITEM_KINDS)}")
    return ItemItemModel(kind, weights, active, matrix.shape[1], {k: float(v) for k, v in params.items()})


def ease_weights(binary: sp.spmatrix, l2: float) -> np.ndarray:
    """EASE^R's B, inverting the Gram matrix in place through its Cholesky factor: one n × n float32 buffer.
    (float32 gives the same top-10 lists as float64 on MovieLens at λ 10-300, in half the time and memory.)

    The Gram matrix is symmetric, so LAPACK is handed its transpose — the same values, already in the column
    order LAPACK works in, so nothing is copied — and B comes back row-ordered (C order): scoring multiplies
    users' rows by it, which copied a column-ordered B in full for every batch of users (6.5 s of a 12 000-item
    tuning trial's 23 s)."""
    gram = (binary.T @ binary).toarray().astype(np.float32)
    gram[np.diag_indices_from(gram)] += np.float32(l2)
    factor, info = lapack.spotrf(gram.T, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE Gram matrix is not positive definite (LAPACK spotrf info {info})")
    inverse, info = lapack.spotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE Gram matrix could not be inverted (LAPACK spotri info {info})")
    _mirror_upper(inverse)
    weights = inverse.T  # the symmetric inverse, row-ordered: a view of the same buffer
    diagonal = np.diag(weights).copy()
    weights /= -diagonal[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def _mirror_upper(matrix: np.ndarray, block: int = 1024) -> None:
    """Copy the upper triangle onto the lower one, in place and block by block (LAPACK fills one triangle)."""
    n = len(matrix)
    for start in range(0, n, block):
        stop = min(start + block, n)
        matrix[start:stop, :start] = matrix[:start, start:stop].T
        square = matrix[start:stop, start:stop]
        square[:] = np.triu(square) + np.triu(square, 1).T


def rp3beta_weights(binary: sp.spmatrix, alpha: float, beta: float) -> np.ndarray:
    """Random-walk transition probabilities item → user → item, ^alpha, / popularity(target)^beta, no self-loops."""
    binary = sp.csr_matrix(binary)
    user_degree = np.maximum(np.asarray(binary.sum(axis=1)).ravel(), 1.0)
    item_degree = np.maximum(np.asarray(binary.sum(axis=0)).ravel(), 1.0)
    user_to_item = sp.diags((1.0 / user_degree).astype(np.float32)) @ binary
    item_to_user = (sp.diags((1.0 / item_degree).astype(np.float32)) @ binary.T).tocsr()
    walk = (item_to_user @ user_to_item).toarray().astype(np.float32)
    if alpha != 1.0:
        np.power(walk, alpha, out=walk)
    walk /= np.power(item_degree, beta).astype(np.float32)[None, :]
    np.fill_diagonal(walk, 0.0)
    return walk


def cosine_weights(binary: sp.spmatrix, shrink: float) -> np.ndarray:
    """Cosine similarity of item columns, ``|a ∩ b| / (|a|·|b| + shrink)`` in binary terms, no self-similarity."""
    gram = (binary.T @ binary).toarray().astype(np.float32)
    norms = np.sqrt(np.diag(gram)).astype(np.float32)
    gram /= norms[:, None] * norms[None, :] + np.float32(shrink)
    np.fill_diagonal(gram, 0.0)
    return gram


def keep_strongest(weights: np.ndarray, neighbours: int, block: int = 2048) -> None:
    """Zero all but each row's ``neighbours`` largest weights, in place (0: keep all) — kNN's k."""
    if neighbours <= 0 or neighbours >= weights.shape[1]:
        return
    for start in range(0, len(weights), block):
        part = weights[start : start + block]
        weakest = np.argpartition(-part, neighbours - 1, axis=1)[:, neighbours:]
        np.put_along_axis(part, weakest, 0.0, axis=1)


class _Scratch(threading.local):
    """Per-thread catalogue-length work arrays, shared by every item-item source of the thread and kept zero
    between calls, so summing a request's table rows costs their entries, not a sort nor the catalogue."""

    sums: np.ndarray = np.zeros(0)
    last: np.ndarray = np.zeros(0, dtype=np.int32)

    def arrays(self, n_items: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.sums) < n_items:  # pages are only touched where a request's items fall
            self.sums, self.last = np.zeros(n_items), np.zeros(n_items, dtype=np.int32)
        return self.sums, self.last


_SCRATCH = _Scratch()


class ItemItemSource:
    """Candidates from a sparse item × item table, walked from the items the user saw: ``history`` of them, most
    recent first, each weighing ``decay``^position (1: all alike, as the exact model weighs them)."""

    def __init__(self, name: str, table: sp.csr_matrix, history: int, decay: float):
        self.name = name
        self.table = table.tocsr()
        self.history = history
        self.decay = decay
        self.n_items = self.table.shape[0]

    def scores(self, rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(item rows ascending, scores) of the items the table rows of ``rows`` reach, scored by the weighted
        sum of those rows. Only the reached items are touched — a request costs the history's neighbours, not the
        catalogue: the entries are summed into a zeroed per-thread array, and each reached item is found once by
        the last entry writing it — and the arrays are read straight from the CSR (scipy's row indexing builds a
        new matrix per call, several times this function's cost)."""
        entries, lengths = row_entries(self.table.indptr, rows)
        targets = np.asarray(self.table.indices[entries], dtype=np.int64)
        sums, last = _SCRATCH.arrays(self.n_items)
        try:
            np.add.at(sums, targets, self.table.data[entries] * np.repeat(weights, lengths))
            order = np.arange(len(targets), dtype=last.dtype)
            last[targets] = order
            reached = np.sort(targets[last[targets] == order])
            return reached, sums[reached]
        finally:
            sums[targets] = 0.0

    def retrieve(self, query: UserQuery, k: int) -> SourceResult:
        rows = query.seen_rows[: self.history]
        if not len(rows):
            return SourceResult.empty(self.name)
        reached, scores = self.scores(rows, np.power(self.decay, np.arange(len(rows), dtype=np.float64)))
        positive = scores > 0
        found, scores = reached[positive], scores[positive]
        wanted = min(k + len(query.exclude_rows), len(found))
        if wanted <= 0:
            return SourceResult.empty(self.name)
        top = np.argpartition(-scores, wanted - 1)[:wanted]
        top = top[np.argsort(-scores[top], kind="stable")]
        return drop_excluded(self.name, found[top], scores[top].astype(np.float32), query.exclude_rows, k)

    def save(self, folder: Path) -> dict[str, Any]:
        return self.entry(save_table(self.table, folder, self.name)["files"])

    def entry(self, files: Mapping[str, str]) -> dict[str, Any]:
        """The manifest entry of this source over the table in ``files`` (written by this source or another)."""
        return {"files": dict(files), "nnz": int(self.table.nnz), "history": self.history, "decay": self.decay}


TABLE_PARTS = ("data", "indices", "indptr")


def save_table(table: sp.csr_matrix, folder: Path, name: str) -> dict[str, Any]:
    """The CSR arrays as plain ``.npy`` files, so a service memory-maps them (one copy for all its workers)."""
    table = sp.csr_matrix(table)
    files = {part: f"{name}.{part}.npy" for part in TABLE_PARTS}
    for part, file in files.items():
        np.save(folder / file, getattr(table, part), allow_pickle=False)
    return {"files": files, "nnz": int(table.nnz)}


def load_table(folder: Path, entry: Mapping[str, Any], n_items: int, mapped: bool = True) -> sp.csr_matrix:
    """A saved table, memory-mapped read-only unless ``mapped`` is False (versions written before, as one
    ``.npz``, are read into memory)."""
    if "file" in entry:
        path = folder / str(entry["file"])
        if not path.exists():
            raise ArtifactError(f"{path}: item-item table missing")
        table = sp.load_npz(path).tocsr()
    else:
        paths = [folder / str(entry["files"][part]) for part in TABLE_PARTS]
        for path in paths:
            if not path.exists():
                raise ArtifactError(f"{path}: item-item table missing")
        data, indices, indptr = (np.load(path, allow_pickle=False, mmap_mode="r" if mapped else None)
                                 for path in paths)  # fmt: skip
        if len(indptr) != n_items + 1 or len(data) != len(indices) or (len(indptr) and indptr[-1] != len(data)):
            raise ArtifactError(f"{paths[2]}: a table of {len(indptr) - 1} rows and {len(data)} entries, "
                                f"expected {n_items} rows")  # fmt: skip
        table = sp.csr_matrix((data, indices, indptr), shape=(n_items, n_items), copy=False)
    if table.shape != (n_items, n_items):
        raise ArtifactError(f"{folder / str(entry.get('file', entry.get('files')))}: table shape {table.shape} for "
                            f"{n_items} items")  # fmt: skip
    return table
