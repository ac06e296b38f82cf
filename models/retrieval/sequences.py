"""Item-to-item tables from what users do one after another: sequences (what came next) and co-occurrence (what
shares a user). Queried with a user's last items, they carry the session — the basket being filled, the film
series being watched — that whole-history models blur."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.data import columns as C
from models.heap import release_free_memory


def strongest_per_row(table: sp.spmatrix, neighbours: int) -> sp.csr_matrix:
    """Keep each row's ``neighbours`` largest entries."""
    coo = sp.coo_matrix(table)
    order = np.lexsort((-coo.data, coo.row))
    rows = coo.row[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    keep = order[rank < neighbours]
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=coo.shape, dtype=np.float32)


def transition_table(
    interactions: pd.DataFrame, item_ids: Sequence[str] | np.ndarray, window: int, neighbours: int
) -> sp.csr_matrix:
    """T[a, b] = Σ over users of 1/d for each time b followed a at distance d ≤ ``window`` in the user's history."""
    row_of = pd.Index(item_ids)
    # only the three columns sorted (not a copy of the whole log), users as codes, rows as int32: at 15 M events
    # the table's inputs take a third of the memory
    ordered = interactions[[C.USER_ID, C.TIMESTAMP, C.ITEM_ID]].sort_values([C.USER_ID, C.TIMESTAMP], kind="stable")
    users = pd.factorize(ordered[C.USER_ID])[0]
    items = row_of.get_indexer(ordered[C.ITEM_ID]).astype(np.int32)
    del ordered
    sources, targets, weights = [], [], []
    for distance in range(1, window + 1):
        same = (users[distance:] == users[:-distance]) & (items[distance:] >= 0) & (items[:-distance] >= 0)
        sources.append(items[:-distance][same])
        targets.append(items[distance:][same])
        weights.append(np.full(int(same.sum()), 1.0 / distance, dtype=np.float32))
    n = len(row_of)
    table = sp.csr_matrix((np.concatenate(weights), (np.concatenate(sources), np.concatenate(targets))), shape=(n, n))
    table.sum_duplicates()
    table.setdiag(0)
    table.eliminate_zeros()
    table = strongest_per_row(table, neighbours)
    release_free_memory()
    return table


def cooccurrence_table(matrix: sp.csr_matrix, neighbours: int, block: int = 4096) -> sp.csr_matrix:
    """C[a, b] = how many users interacted with both a and b (``matrix``: binary users × catalogue), computed in
    blocks of items so memory stays bounded by the pruned table."""
    by_item = matrix.T.tocsr().astype(np.float32)
    parts = [strongest_per_row(_off_diagonal(by_item[start : start + block] @ matrix, start), neighbours)
             for start in range(0, by_item.shape[0], block)]  # fmt: skip
    del by_item
    n = matrix.shape[1]
    table = stack_row_blocks(parts, n) if parts else sp.csr_matrix((n, n), dtype=np.float32)
    release_free_memory()  # the pruned blocks were heap-sized: without a trim their pages stay resident
    return table


def _off_diagonal(product: sp.spmatrix, first_row: int) -> sp.coo_matrix:
    """``product``'s entries except an item's with itself (``product``: the rows of items from ``first_row``)."""
    coo = product.tocoo()
    keep = coo.col != coo.row + first_row
    return sp.coo_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), coo.shape)


def stack_row_blocks(blocks: list[sp.csr_matrix], n_columns: int, trim_every: int = 256 * 2**20) -> sp.csr_matrix:
    """The CSR blocks one under another, each freed once copied (``blocks`` is emptied) and the freed heap handed
    back every ``trim_every`` bytes. scipy's ``vstack`` held every block and the result together, twice the table:
    at 1 M items the co-occurrence table is 3.5 GB and its build peaked 7.4 GB above its start."""
    nnz = sum(block.nnz for block in blocks)
    data = np.empty(nnz, dtype=np.float32)
    indices = np.empty(nnz, dtype=np.int32 if n_columns < 2**31 else np.int64)
    indptr = np.zeros(sum(block.shape[0] for block in blocks) + 1, dtype=np.int64)
    row = filled = untrimmed = 0
    blocks.reverse()  # popped from the end, in the given order
    while blocks:
        block = blocks.pop()
        data[filled : filled + block.nnz] = block.data
        indices[filled : filled + block.nnz] = block.indices
        indptr[row + 1 : row + 1 + block.shape[0]] = block.indptr[1:] + filled
        row, filled = row + block.shape[0], filled + block.nnz
        untrimmed += block.data.nbytes + block.indices.nbytes
        del block
        if untrimmed >= trim_every:  # the blocks were heap-sized: freed, their pages stay resident until trimmed
            release_free_memory()
            untrimmed = 0
    return sp.csr_matrix((data, indices, indptr), shape=(row, n_columns), copy=False)
