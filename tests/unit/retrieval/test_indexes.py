"""FAISS index build, tuning, round trip, and every load-time check."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from models.files import ArtifactError
from models.retrieval.als import mips_item_vectors, mips_query
from models.retrieval.indexes import (
    FLAT_MIN_SPEEDUP,
    VectorIndex,
    ann_recall,
    choose_factory,
    exact_search,
    faster_of_ivf_and_exact,
    one_search_thread,
)


def unit_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    vectors = centres[rng.integers(0, 20, size=n)] + 0.3 * rng.normal(size=(n, dim))
    vectors = vectors.astype(np.float32)
    faiss.normalize_L2(vectors)
    return vectors


def ids(n: int) -> np.ndarray:
    return np.array([f"item{i}" for i in range(n)])


def test_factory_by_catalogue_size():
    assert choose_factory(9_000, 384) == "Flat"
    assert choose_factory(20_000, 384) == "IVF128,SQ8"
    assert choose_factory(100_000, 384) == "IVF256,SQ8"
    assert choose_factory(1_000_000, 384) == "IVF1024,SQ8"
    assert choose_factory(20_000_000, 384) == "IVF4096,PQ48np"


def test_lifted_vectors_get_half_precision_codes_and_more_lists():
    assert choose_factory(9_000, 80, lifted=True) == "Flat"
    assert choose_factory(20_000, 80, lifted=True) == "IVF512,SQfp16"
    assert choose_factory(1_000_000, 80, lifted=True) == "IVF4096,SQfp16"
    assert choose_factory(20_000_000, 80, lifted=True) == "IVF4096,PQ10np"


def test_eight_bit_codes_cannot_rank_lifted_vectors_of_skewed_norms():
    """The reason for ``lifted``: with iALS-like norms (heavy-tailed), 8-bit codes miss the target recall even
    when every list is probed; the lifted factory's half-precision codes reach it."""
    rng = np.random.default_rng(3)
    factors = rng.normal(size=(12_000, 32)).astype(np.float32)
    factors *= (rng.lognormal(0.0, 2.0, size=len(factors)) / np.linalg.norm(factors, axis=1))[:, None]
    lifted, _ = mips_item_vectors(factors)
    queries = np.stack([mips_query(user) for user in rng.normal(size=(60, 32))])
    truth = exact_search(lifted, queries, 50)
    eight_bit = VectorIndex.build(lifted, ids(len(lifted)), factory="IVF64,SQ8")
    assert eight_bit.tune(queries, truth, k=50, target=0.95) < 0.95
    assert eight_bit.params["nprobe"] == 64  # every list probed
    chosen = VectorIndex.build(lifted, ids(len(lifted)), lifted=True)
    assert chosen.factory.endswith(",SQfp16")
    assert chosen.tune(queries, truth, k=50, target=0.95) >= 0.95


def test_flat_search_is_exact_and_maps_ids():
    vectors = unit_vectors(500)
    index = VectorIndex.build(vectors, ids(500))
    scores, found = index.search(vectors[7], 5)
    assert found[0, 0] == "item7"
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(scores[0]) <= 1e-6)


def test_k_larger_than_catalogue():
    index = VectorIndex.build(unit_vectors(10), ids(10))
    scores, found = index.search(unit_vectors(1, seed=3), 50)
    assert found.shape == (1, 10) and set(found[0]) == set(ids(10))


def test_unnormalised_vectors_are_refused():
    with pytest.raises(ValueError, match="L2-normalised"):
        VectorIndex.build(np.ones((5, 4), np.float32), ids(5))


def test_ivf_tuning_reaches_target_recall():
    vectors = unit_vectors(4000, seed=1)
    queries = unit_vectors(50, seed=2)
    index = VectorIndex.build(vectors, ids(4000), factory="IVF64,Flat")
    truth = exact_search(vectors, queries, 100)
    index.set_search_param(1)
    low = ann_recall(index.search(queries, 100)[1], ids(4000)[truth])
    recall = index.tune(queries, truth, k=100, target=0.95)
    assert recall >= 0.95 > low
    assert index.params["nprobe"] > 1 and index.params["recall_vs_exact"] == pytest.approx(recall, abs=1e-4)


def test_hnsw_tuning_uses_ef_search():
    vectors = unit_vectors(2000, seed=4)
    index = VectorIndex.build(vectors, ids(2000), factory="HNSW16")
    truth = exact_search(vectors, vectors[:20], 50)
    assert index.tune(vectors[:20], truth, k=50) >= 0.95
    assert index.params["efSearch"] >= 50


def test_round_trip_keeps_results_and_search_params(tmp_path: Path):
    vectors = unit_vectors(3000, seed=5)
    index = VectorIndex.build(vectors, ids(3000), factory="IVF32,Flat")
    index.set_search_param(8)
    entry = index.save(tmp_path, "semantic")
    loaded = VectorIndex.load(tmp_path, entry, expected_dim=16)
    assert loaded.params["nprobe"] == 8 and faiss.extract_index_ivf(loaded.index).nprobe == 8
    before = index.search(vectors[:5], 20)
    after = loaded.search(vectors[:5], 20)
    np.testing.assert_array_equal(before[1], after[1])
    assert entry["metric"] == "inner_product" and entry["dim"] == 16 and entry["count"] == 3000


@pytest.mark.parametrize("factory", ["IVF32,SQ8", "Flat"])
def test_a_loaded_index_is_memory_mapped_and_grows_in_memory(tmp_path: Path, factory: str):
    vectors = unit_vectors(3000, seed=6)
    index = VectorIndex.build(vectors, ids(3000), factory=factory)
    if factory != "Flat":
        index.set_search_param(8)
    loaded = VectorIndex.load(tmp_path, index.save(tmp_path, "semantic"))
    assert loaded.mapped_from == tmp_path / "semantic.faiss"  # the page cache holds it once for every worker
    np.testing.assert_array_equal(loaded.search(vectors[:5], 20)[1], index.search(vectors[:5], 20)[1])
    grown = loaded.in_memory_copy()  # what a live new item is added to (mapped IVF lists cannot be cloned)
    grown.add(unit_vectors(2, seed=7))
    assert grown.ntotal == 3002 and len(loaded) == 3000  # the mapped index is untouched
    if factory != "Flat":
        assert faiss.extract_index_ivf(grown).nprobe == 8
    assert index.mapped_from is None and index.in_memory_copy().ntotal == 3000


def test_a_memory_mapped_ivf_searches_without_prefetch_threads(tmp_path: Path):
    """FAISS's on-disk lists start 32 prefetch threads per search by default: several ms a single query."""
    index = VectorIndex.build(unit_vectors(3000, seed=8), ids(3000), factory="IVF32,SQ8")
    entry = index.save(tmp_path, "semantic")
    mapped = VectorIndex.load(tmp_path, entry)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(mapped.index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.prefetch_nthread == 0
    read = VectorIndex.load(tmp_path, entry, mapped=False)
    assert not isinstance(faiss.downcast_InvertedLists(faiss.extract_index_ivf(read.index).invlists),
                          faiss.OnDiskInvertedLists)  # fmt: skip
    queries = unit_vectors(5, seed=9)
    np.testing.assert_array_equal(mapped.search(queries, 50)[1], read.search(queries, 50)[1])


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict]:
    entry = VectorIndex.build(unit_vectors(100), ids(100)).save(tmp_path, "semantic")
    return tmp_path, entry


def test_load_missing_file(saved):
    folder, entry = saved
    (folder / "semantic.faiss").unlink()
    with pytest.raises(ArtifactError, match=r"semantic\.faiss: index file missing"):
        VectorIndex.load(folder, entry)


def test_load_corrupt_file(saved):
    folder, entry = saved
    (folder / "semantic.faiss").write_bytes(b"garbage" * 10)
    with pytest.raises(ArtifactError, match=r"semantic\.faiss: not a readable FAISS index"):
        VectorIndex.load(folder, entry)


def test_load_wrong_metric(saved):
    folder, entry = saved
    with pytest.raises(ArtifactError, match="metric 'l2' is not 'inner_product'"):
        VectorIndex.load(folder, {**entry, "metric": "l2"})


def test_load_dimension_mismatch(saved):
    folder, entry = saved
    with pytest.raises(ArtifactError, match=r"dimension 16 does not match the manifest \(384\)"):
        VectorIndex.load(folder, {**entry, "dim": 384})
    with pytest.raises(ArtifactError, match=r"dimension 16 does not match its queries' \(384\)"):
        VectorIndex.load(folder, entry, expected_dim=384)
    with pytest.raises(ArtifactError, match=r"dimension 16 does not match its queries' \(32 or 17\)"):
        VectorIndex.load(folder, entry, expected_dim=(32, 17))
    assert VectorIndex.load(folder, entry, expected_dim=(16, 17)).dim == 16  # e.g. iALS: padded or older unpadded


def test_load_count_mismatch(saved):
    folder, entry = saved
    np.save(folder / "semantic.ids.npy", ids(99))
    with pytest.raises(ArtifactError, match="holds 100 vectors, id map 99"):
        VectorIndex.load(folder, entry)


def test_l2_index_file_is_refused(saved):
    folder, entry = saved
    faiss.write_index(faiss.IndexFlatL2(16), str(folder / "semantic.faiss"))
    with pytest.raises(ArtifactError, match="is not inner product"):
        VectorIndex.load(folder, entry)


def test_ivf_pq_option_for_very_large_catalogues(tmp_path: Path):
    """The IVF-PQ factory the chooser picks from 10 M vectors, built and round-tripped at small scale."""
    vectors = unit_vectors(6000, dim=32, seed=7)
    index = VectorIndex.build(vectors, ids(6000), factory="IVF64,PQ8np")
    truth = exact_search(vectors, vectors[:30], 50)
    recall = index.tune(vectors[:30], truth, k=50, target=0.5)
    assert recall >= 0.5 and index.params["nprobe"] >= 1
    loaded = VectorIndex.load(tmp_path, index.save(tmp_path, "pq"), expected_dim=32)
    np.testing.assert_array_equal(loaded.search(vectors[:3], 10)[1], index.search(vectors[:3], 10)[1])


def test_exact_search_replaces_the_ivf_only_when_measured_faster():
    vectors = unit_vectors(3000, dim=65, seed=4)
    queries = unit_vectors(40, dim=65, seed=5)
    ivf = VectorIndex.build(vectors, ids(3000), factory="IVF32,SQ8")
    ivf.tune(queries, exact_search(vectors, queries, 200), 200, target=0.95)
    chosen = faster_of_ivf_and_exact(ivf, vectors, queries, 200)
    timings = chosen.params["compared"]
    assert set(timings) == {"IVF32,SQ8", "Flat"}
    assert (chosen.factory == "Flat") == (timings["Flat"] * FLAT_MIN_SPEEDUP < timings["IVF32,SQ8"])
    if chosen.factory == "Flat":
        assert chosen.params["recall_vs_exact"] == 1.0
        assert np.array_equal(chosen.search_rows(queries, 200)[1], exact_search(vectors, queries, 200))
    else:
        assert chosen is ivf and chosen.params["nprobe"] == ivf.params["nprobe"]


def test_an_exact_index_or_an_empty_query_set_is_kept_as_is():
    vectors = unit_vectors(500)
    flat = VectorIndex.build(vectors, ids(500))
    assert faster_of_ivf_and_exact(flat, vectors, vectors[:5], 10) is flat
    ivf = VectorIndex.build(unit_vectors(2000), ids(2000), factory="IVF16,Flat")
    assert faster_of_ivf_and_exact(ivf, unit_vectors(2000), np.empty((0, 16), np.float32), 10) is ivf


def test_one_search_thread_restores_the_thread_count():
    before = faiss.omp_get_max_threads()
    with one_search_thread():
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
