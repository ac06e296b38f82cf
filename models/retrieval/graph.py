"""The item graph source: RP3beta random-walk scores between items, queried with the user's recent items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.data import columns as C
from models.retrieval.matrices import interaction_matrix
from models.retrieval.sources import SourceResult, UserQuery, drop_excluded


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


class ItemItemSource:
    """Neighbours on the interaction graph: a sparse item × item table (RP3beta random-walk scores) queried with
    the user's recent items, the most recent weighing most (weight exp(−rank / decay), rank 0 = newest)."""

    name = "graph"

    def __init__(self, table: sp.csr_matrix, item_ids: np.ndarray, recent: int, decay: float):
        self.table = table.tocsr()
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.row_of = pd.Index(self.item_ids)
        self.recent = recent
        self.decay = decay

    def retrieve(self, query: UserQuery, k: int) -> SourceResult:
        rows = self.row_of.get_indexer(list(query.history_items)[-self.recent :][::-1])
        weights = np.exp(-np.arange(len(rows)) / self.decay)
        known = rows >= 0
        if not known.any():
            return SourceResult.empty(self.name)
        scores = np.asarray(self.table[rows[known]].T @ weights[known]).ravel()
        wanted = min(k + len(query.exclude_rows), int((scores > 0).sum()))
        if wanted <= 0:
            return SourceResult.empty(self.name)
        top = np.argpartition(-scores, wanted - 1)[:wanted]
        top = top[np.argsort(-scores[top], kind="stable")]
        return drop_excluded(self.name, top, scores[top].astype(np.float32), query.exclude_rows, k)

    def save(self, folder: Path, name: str) -> dict[str, object]:
        sp.save_npz(folder / f"{name}.npz", self.table, compressed=False)
        return {"file": f"{name}.npz", "recent": self.recent, "decay": self.decay, "nnz": int(self.table.nnz)}

    @classmethod
    def load(cls, folder: Path, entry: Mapping[str, Any], item_ids: np.ndarray) -> ItemItemSource:
        table = sp.load_npz(folder / str(entry["file"]))
        if table.shape != (len(item_ids), len(item_ids)):
            raise ValueError(f"{folder / str(entry['file'])}: table shape {table.shape} for {len(item_ids)} items")
        return cls(table, item_ids, int(entry["recent"]), float(entry["decay"]))
