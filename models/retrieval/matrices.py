"""User × item matrices built from an interaction log: what every collaborative model is fitted on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.data import columns as C


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
