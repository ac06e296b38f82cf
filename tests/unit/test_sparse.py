import numpy as np
import pytest
import scipy.sparse as sp

from models.sparse import row_entries


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_row_entries_read_the_same_entries_as_scipy_row_indexing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    matrix = sp.random(60, 40, density=0.1, format="csr", random_state=seed, dtype=np.float32)
    matrix[7] = 0.0  # an empty row among the requested ones
    matrix.eliminate_zeros()
    rows = np.concatenate(([7, 7], rng.integers(0, 60, size=25)))  # repeated and unsorted rows

    entries, lengths = row_entries(matrix.indptr, rows)

    expected = matrix[rows]
    np.testing.assert_array_equal(lengths, np.diff(expected.indptr))
    np.testing.assert_array_equal(matrix.indices[entries], expected.indices)
    np.testing.assert_array_equal(matrix.data[entries], expected.data)


def test_row_entries_of_no_rows_are_empty() -> None:
    matrix = sp.eye(5, format="csr")
    entries, lengths = row_entries(matrix.indptr, np.empty(0, dtype=np.int64))
    assert entries.size == 0 and lengths.size == 0
