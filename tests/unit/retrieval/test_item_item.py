"""Item-item models against their closed forms on tiny matrices, pruning, and the session tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.data import columns as C
from models.files import ArtifactError
from models.retrieval.item_item import ItemItemSource, fit_item_item, keep_strongest, load_table, save_table
from models.retrieval.sequences import cooccurrence_table, stack_row_blocks, strongest_per_row, transition_table
from models.retrieval.stage1 import load_item_item_sources


def binary(rows: list[list[int]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


MATRIX = binary([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 1, 1]])


def test_ease_is_its_closed_form():
    model = fit_item_item("ease", MATRIX, {"l2": 2.0}, max_items=10)
    gram = (MATRIX.T @ MATRIX).toarray().astype(np.float64) + 2.0 * np.eye(4)
    inverse = np.linalg.inv(gram)
    expected = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.weights, expected, atol=1e-5)
    scores = model.scores(MATRIX[:1])
    np.testing.assert_allclose(scores[0], MATRIX[:1].toarray()[0] @ expected, atol=1e-5)


def test_ease_weights_are_row_ordered_and_exact_beyond_one_block():
    """More items than the mirroring's 1 024-row block; B is used row by row (scoring, tables), so it must come
    back in C order — a column-ordered B was copied in full by every batch of scored users."""
    rng = np.random.default_rng(3)
    matrix = sp.csr_matrix((rng.random((400, 1100)) < 0.02).astype(np.float32))
    model = fit_item_item("ease", matrix, {"l2": 5.0}, max_items=2000)
    assert model.weights.flags["C_CONTIGUOUS"]
    active = model.active
    gram = (matrix[:, active].T @ matrix[:, active]).toarray().astype(np.float64) + 5.0 * np.eye(len(active))
    inverse = np.linalg.inv(gram)
    expected = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.weights, expected, atol=1e-4)


def test_item_knn_is_shrunk_cosine_with_k_neighbours():
    model = fit_item_item("item_knn", MATRIX, {"shrink": 1.0, "neighbours": 0}, max_items=10)
    dense = MATRIX.toarray()
    norms = np.linalg.norm(dense, axis=0)
    expected = (dense.T @ dense) / (norms[:, None] * norms[None, :] + 1.0)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.weights, expected, atol=1e-6)
    pruned = fit_item_item("item_knn", MATRIX, {"shrink": 1.0, "neighbours": 1}, max_items=10)
    assert ((pruned.weights > 0).sum(axis=1) <= 1).all()


def test_only_the_most_frequent_items_are_fitted_when_capped():
    model = fit_item_item("rp3beta", MATRIX, {"alpha": 1.0, "beta": 0.0}, max_items=2)
    assert model.active.tolist() == [0, 1]  # items 0 and 1 have three users each
    scores = model.scores(MATRIX)
    assert (scores[:, 2:] == 0).all()


def test_table_keeps_each_items_strongest_neighbours():
    weights = np.array([[0, 3, 1, 2], [5, 0, 0, 1], [0, 0, 0, 0], [1, 2, 3, 0]], dtype=np.float32)
    keep_strongest(weights, 2)
    assert weights.tolist() == [[0, 3, 0, 2], [5, 0, 0, 1], [0, 0, 0, 0], [0, 2, 3, 0]]
    assert strongest_per_row(sp.csr_matrix(weights), 1).toarray().tolist() == [
        [0, 3, 0, 0], [5, 0, 0, 0], [0, 0, 0, 0], [0, 0, 3, 0],
    ]  # fmt: skip


def test_transitions_count_what_came_next_within_the_window():
    t = pd.Timestamp("2025-01-01", tz="UTC")
    log = pd.DataFrame(
        {
            C.USER_ID: ["u", "u", "u", "v", "v"],
            C.ITEM_ID: ["a", "b", "c", "b", "c"],
            C.TIMESTAMP: [t, t + pd.Timedelta(hours=1), t + pd.Timedelta(hours=2), t, t + pd.Timedelta(hours=5)],
        }
    )
    table = transition_table(log, ["a", "b", "c"], window=2, neighbours=10).toarray()
    assert table[0, 1] == 1.0 and table[0, 2] == 0.5  # a → b (next), a → c (two steps on)
    assert table[1, 2] == 2.0  # b → c for both users
    assert table[2].sum() == 0 and table[1, 0] == 0  # nothing follows c; order matters


def test_cooccurrence_counts_shared_users_without_the_diagonal():
    table = cooccurrence_table(MATRIX, neighbours=10, block=2).toarray()
    dense = MATRIX.toarray()
    expected = dense.T @ dense
    np.fill_diagonal(expected, 0)
    np.testing.assert_array_equal(table, expected)


def test_row_blocks_stack_as_scipy_stacks_them_and_are_freed():
    blocks = [
        sp.random(rows, 30, density=0.2, format="csr", dtype=np.float32, random_state=rows) for rows in (7, 1, 12)
    ]
    blocks.insert(1, sp.csr_matrix((3, 30), dtype=np.float32))  # a block without entries
    expected = sp.vstack(blocks).tocsr()
    stacked = stack_row_blocks(blocks, 30, trim_every=1)  # trimmed after every block
    assert blocks == []  # each block was released once copied
    assert stacked.shape == expected.shape and (stacked != expected).nnz == 0
    np.testing.assert_array_equal(stacked.indptr, expected.indptr)
    np.testing.assert_array_equal(stacked.indices, expected.indices)


def test_sources_sharing_a_table_write_it_once_and_load_it_once(tmp_path: Path):
    shared = sp.random(20, 20, density=0.2, format="csr", dtype=np.float32, random_state=3)
    last, recent = ItemItemSource("cooc_last", shared, 1, 1.0), ItemItemSource("cooc_recent", shared, 5, 1.0)
    entries = {"cooc_last": last.save(tmp_path)}
    entries["cooc_recent"] = recent.entry(entries["cooc_last"]["files"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"cooc_last.{part}.npy" for part in ("data", "indices", "indptr")
    ]
    loaded = load_item_item_sources(tmp_path, entries, 20, mapped=False)
    assert loaded["cooc_recent"].table is loaded["cooc_last"].table and (loaded["cooc_last"].table != shared).nnz == 0
    assert (loaded["cooc_last"].history, loaded["cooc_recent"].history) == (1, 5)
    older = {"cooc_last": entries["cooc_last"], "cooc_recent": recent.save(tmp_path)}  # a version that wrote both
    loaded = load_item_item_sources(tmp_path, older, 20, mapped=True)
    assert loaded["cooc_recent"].table is not loaded["cooc_last"].table
    assert (loaded["cooc_recent"].table != loaded["cooc_last"].table).nnz == 0


def test_a_saved_table_loads_memory_mapped_and_read_only(tmp_path: Path):
    table = sp.random(300, 300, density=0.05, format="csr", dtype=np.float32, random_state=1)
    entry = save_table(table, tmp_path, "sequence")
    loaded = load_table(tmp_path, entry, 300)
    assert (loaded != table).nnz == 0 and entry["nnz"] == table.nnz
    assert not loaded.data.flags.writeable and not loaded.indices.flags.writeable  # views of the mapped files
    np.testing.assert_array_equal(loaded[[3, 7]].toarray(), table[[3, 7]].toarray())


def test_a_table_of_an_older_version_still_loads(tmp_path: Path):
    table = sp.random(50, 50, density=0.1, format="csr", dtype=np.float32, random_state=2)
    sp.save_npz(tmp_path / "cooc_last.npz", table, compressed=False)
    assert (load_table(tmp_path, {"file": "cooc_last.npz", "nnz": table.nnz}, 50) != table).nnz == 0


def test_a_table_that_does_not_fit_the_catalogue_is_named(tmp_path: Path):
    entry = save_table(sp.random(40, 40, density=0.1, format="csr", dtype=np.float32), tmp_path, "ease")
    with pytest.raises(ArtifactError, match=r"ease\.indptr\.npy: a table of 40 rows"):
        load_table(tmp_path, entry, 41)
    (tmp_path / "ease.data.npy").unlink()
    with pytest.raises(ArtifactError, match=r"ease\.data\.npy: item-item table missing"):
        load_table(tmp_path, entry, 40)
