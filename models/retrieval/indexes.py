"""FAISS indexes over item vectors: built from a factory string chosen by catalogue size, tuned against exact
search, saved in FAISS's own format beside the id map, loaded with checks that name what is wrong.

All indexes use inner product on L2-normalised vectors (cosine). FAISS row ``i`` is ``item_ids[i]``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from models.files import ArtifactError
from models.progress import progress

METRIC = "inner_product"
EXACT_BELOW = 10_000
PQ_FROM = 10_000_000
ADD_CHUNK = 200_000
MAPPED = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
"""How a published index is read: memory-mapped, read-only (IVF inverted lists and flat codes stay in the file)."""


def ivf_lists(n_vectors: int, scale: float = 1.0) -> int:
    """nlist: a power of two near ``scale`` × √N (at scale 1: 300–1000 vectors per list; large k favours large
    lists)."""
    return int(2 ** max(4, round(math.log2(scale * math.sqrt(max(n_vectors, 1))))))


LIFTED_CODEC = "SQfp16"
LIFTED_LISTS_SCALE = 4.0
"""Lifted inner-product vectors (iALS items, ``als.mips_item_vectors``) are not clustered like text vectors: one
coordinate carries most of a low-norm item's length, so 8-bit codes (one range per dimension, set by the largest
items) cannot tell the small items' scores apart, and the low-norm items crowd into a few lists. Measured on 1 M
iALS items (64 factors, 300 users, k = 50, one thread): IVF1024,SQ8 stays below recall 0.90 even probing every
list (2.4 ms at nprobe 512); IVF1024,SQfp16 reaches 0.95 at nprobe 128 (0.39 ms) and IVF4096,SQfp16 at nprobe 128
(0.18 ms; k = 500: 0.956 at nprobe 256, 0.48 ms, where IVF1024 needs 512 and 3.3 ms). Half-precision codes take
2 bytes per dimension instead of 1: 160 MB at 1 M × 80."""


def choose_factory(n_vectors: int, dim: int, lifted: bool = False) -> str:
    """Exact search below 10 k vectors; IVF with 8-bit scalar quantisation up to 10 M (4× smaller than float,
    ≈ 0.003 recall lost); IVF-PQ (dim/8 bytes per vector) from 10 M, where memory decides. ``lifted`` vectors
    (inner product turned into cosine by an extra coordinate) get half-precision codes and 4× the lists below
    10 M (``LIFTED_CODEC``).

    Measured here at 1 M × 384, k = 500, one thread: IVF1024,SQ8 with nprobe 10 reaches recall@500 0.966 vs exact
    in 0.5 ms p50 (exact search: 118 ms).
    """
    if n_vectors < EXACT_BELOW:
        return "Flat"
    if n_vectors < PQ_FROM:
        if lifted:
            return f"IVF{ivf_lists(n_vectors, LIFTED_LISTS_SCALE)},{LIFTED_CODEC}"
        return f"IVF{ivf_lists(n_vectors)},SQ8"
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return f"IVF{ivf_lists(n_vectors)},PQ{m}np"  # np: skip polysemous training (minutes, and unused by IVF search)


def add_in_chunks(index: faiss.Index, vectors: np.ndarray, chunk: int = ADD_CHUNK) -> None:
    """``index.add`` in slices, so a large catalogue's build shows its progress (same index as one call)."""
    if len(vectors) <= chunk:
        index.add(vectors)
        return
    with progress(desc=f"index {len(vectors):,} vectors", total=len(vectors), unit="vec") as bar:
        for start in range(0, len(vectors), chunk):
            index.add(vectors[start : start + chunk])
            bar.update(min(chunk, len(vectors) - start))


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _hnsw(index: faiss.Index) -> faiss.IndexHNSW | None:
    downcast = faiss.downcast_index(index)
    return downcast if isinstance(downcast, faiss.IndexHNSW) else None


def search_param_name(index: faiss.Index) -> str | None:
    if _ivf(index) is not None:
        return "nprobe"
    if _hnsw(index) is not None:
        return "efSearch"
    return None


@dataclass
class VectorIndex:
    """A FAISS index plus the item id of each row and the parameters it was built and tuned with."""

    index: faiss.Index
    item_ids: np.ndarray
    factory: str
    params: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    mapped_from: Path | None = None
    """The file a memory-mapped index reads its vectors from (the page cache holds them once for every process
    that maps the file: the service's workers share one copy); None for an index in this process's memory."""

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(
        cls, vectors: np.ndarray, item_ids: np.ndarray, factory: str | None = None, seed: int = 42,
        lifted: bool = False,
    ) -> VectorIndex:  # fmt: skip
        """Train (if the index needs it) and add ``vectors``; they must already be L2-normalised. ``lifted``: the
        vectors are lifted inner-product vectors (the default factory differs, see ``choose_factory``)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) != len(item_ids):
            raise ValueError(f"{len(vectors)} vectors but {len(item_ids)} item ids")
        norms = np.linalg.norm(vectors, axis=1)
        if len(vectors) and not np.allclose(norms, 1.0, atol=1e-3):
            raise ValueError("vectors must be L2-normalised for inner-product (cosine) search")
        factory = factory or choose_factory(len(vectors), vectors.shape[1], lifted)
        started = time.perf_counter()
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            ivf = _ivf(index)
            sample_size = min(len(vectors), 64 * ivf.nlist) if ivf is not None else len(vectors)
            rng = np.random.default_rng(seed)
            sample = vectors[np.sort(rng.choice(len(vectors), size=sample_size, replace=False))]
            index.train(sample)
        add_in_chunks(index, vectors)
        built = cls(index, np.asarray(item_ids, dtype=str), factory, {}, time.perf_counter() - started)
        return built

    def set_search_param(self, value: int) -> None:
        name = search_param_name(self.index)
        if name == "nprobe":
            ivf = _ivf(self.index)
            assert ivf is not None
            ivf.nprobe = int(value)
        elif name == "efSearch":
            hnsw = _hnsw(self.index)
            assert hnsw is not None
            hnsw.hnsw.efSearch = int(value)
        else:
            return
        self.params[name] = int(value)

    def search_rows(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, row numbers) per query row; missing slots have score -inf and row -1."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query dimension {queries.shape[1]} does not match the index ({self.dim})")
        k = min(k, len(self))
        if k <= 0:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), dtype=np.int64)
        scores, rows = self.index.search(queries, k)
        return np.where(rows >= 0, scores, -np.inf).astype(np.float32), rows

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, item ids) per query row; missing slots have score -inf and id ''."""
        scores, rows = self.search_rows(queries, k)
        ids = np.where(rows >= 0, self.item_ids[np.clip(rows, 0, None)], "")
        return scores, ids

    def tune(self, queries: np.ndarray, exact_rows: np.ndarray, k: int, target: float = 0.95) -> float:
        """Raise nprobe / efSearch until recall@k against exact search reaches ``target``; returns the recall.

        ``exact_rows`` are the exact top-k row numbers per query (see ``exact_search``).
        """
        exact_ids = self.item_ids[exact_rows]
        name = search_param_name(self.index)
        if name is None:
            self.params["recall_vs_exact"] = 1.0
            return 1.0
        if name == "nprobe":
            ivf = _ivf(self.index)
            assert ivf is not None
            steps = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768)
            ladder = [p for p in (*steps, *(2**i for i in range(10, 20))) if p < ivf.nlist] + [ivf.nlist]
        else:
            ladder = [int(k * f) for f in (1.0, 1.25, 1.5, 2.0, 3.0, 4.0)]
        recall = 0.0
        for value in ladder:
            self.set_search_param(value)
            recall = ann_recall(self.search(queries, k)[1], exact_ids)
            if recall >= target:
                break
        self.params["recall_vs_exact"] = round(recall, 4)
        self.params["tuned_k"] = k
        return recall

    def save(self, folder: Path, name: str) -> dict[str, Any]:
        """Write ``name.faiss`` and ``name.ids.npy``; return the manifest entry describing them."""
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(folder / f"{name}.faiss"))
        np.save(folder / f"{name}.ids.npy", self.item_ids, allow_pickle=False)
        return {
            "file": f"{name}.faiss",
            "ids": f"{name}.ids.npy",
            "factory": self.factory,
            "metric": METRIC,
            "dim": self.dim,
            "count": len(self),
            "params": dict(self.params),
            "build_seconds": round(self.build_seconds, 3),
            "bytes": (folder / f"{name}.faiss").stat().st_size,
        }

    @classmethod
    def load(
        cls, folder: Path, entry: dict[str, Any], expected_dim: int | tuple[int, ...] | None = None,
        mapped: bool = True,
    ) -> VectorIndex:  # fmt: skip
        """Read an index written by ``save`` (memory-mapped unless ``mapped`` is False) and check it against its
        manifest entry and the dimension(s) its queries will have."""
        path = folder / entry["file"]
        ids_path = folder / entry["ids"]
        for required in (path, ids_path):
            if not required.exists():
                raise ArtifactError(f"{required}: index file missing")
        if entry.get("metric") != METRIC:
            raise ArtifactError(f"{path}: metric '{entry.get('metric')}' is not '{METRIC}'")
        try:
            index = faiss.read_index(str(path), MAPPED if mapped else 0)
            if mapped:
                without_prefetch_threads(index)
        except RuntimeError as error:
            raise ArtifactError(f"{path}: not a readable FAISS index ({str(error).splitlines()[0]})") from error
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ArtifactError(f"{path}: FAISS metric type {index.metric_type} is not inner product")
        if index.d != entry["dim"]:
            raise ArtifactError(f"{path}: dimension {index.d} does not match the manifest ({entry['dim']})")
        allowed = (expected_dim,) if isinstance(expected_dim, int) else expected_dim
        if allowed is not None and index.d not in allowed:
            raise ArtifactError(f"{path}: dimension {index.d} does not match its queries' "
                                f"({' or '.join(map(str, allowed))})")  # fmt: skip
        item_ids = np.load(ids_path, allow_pickle=False)
        if index.ntotal != entry["count"] or len(item_ids) != index.ntotal:
            raise ArtifactError(
                f"{path}: holds {index.ntotal} vectors, id map {len(item_ids)}, manifest {entry['count']}"
            )
        loaded = cls(index, item_ids, entry["factory"], dict(entry.get("params", {})),
                     mapped_from=path if mapped else None)  # fmt: skip
        loaded.apply_search_params()
        return loaded

    def apply_search_params(self) -> None:
        param = search_param_name(self.index)
        if param and param in self.params:
            self.set_search_param(self.params[param])

    def in_memory_copy(self) -> faiss.Index:
        """A copy that can grow (live new items): FAISS cannot clone memory-mapped inverted lists, so a mapped
        index is read again from its file, into this process's memory, with the same search parameters."""
        if self.mapped_from is None:
            return faiss.clone_index(self.index)
        copy = VectorIndex(faiss.read_index(str(self.mapped_from)), self.item_ids, self.factory, dict(self.params))
        copy.apply_search_params()
        return copy.index


FLAT_MAX_BYTES = 2**30
"""Largest float32 matrix that may be served by exact search instead of the tuned IVF (when exact is faster)."""
FLAT_MIN_SPEEDUP = 1.5
"""Exact search replaces the IVF only when this much faster: the timing is noisy, the choice should not flip."""


def without_prefetch_threads(index: faiss.Index) -> None:
    """A memory-mapped IVF reads its lists through ``OnDiskInvertedLists``, which by default starts 32 prefetch
    threads on every search: measured on the demo's 20 k-item semantic index, 4.1 ms a single query instead of
    1.1 ms with them off (the lists are in the page cache; the results are the same)."""
    try:
        lists = faiss.extract_index_ivf(index).invlists
    except RuntimeError:  # not an IVF index
        return
    if lists is not None and isinstance(lists := faiss.downcast_InvertedLists(lists), faiss.OnDiskInvertedLists):
        lists.prefetch_nthread = 0


@contextmanager
def one_search_thread() -> Iterator[None]:
    """One FAISS thread while searching one query at a time (what the service does): for single queries a
    second OpenMP thread costs more than it brings (measured: exact search over 20 k × 65 takes 1.06 ms with two,
    0.50 ms with one)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def median_query_ms(index: VectorIndex, queries: np.ndarray, k: int) -> float:
    """Median latency of single-query searches, one thread (the service's way)."""
    times = []
    with one_search_thread():
        for row in queries:
            started = time.perf_counter()
            index.search_rows(row, k)
            times.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(times)) if times else 0.0


def faster_of_ivf_and_exact(index: VectorIndex, vectors: np.ndarray, queries: np.ndarray, k: int) -> VectorIndex:
    """The tuned approximate index, or exact search when it is clearly faster at the served K: an IVF that must
    probe most of its lists to reach the target recall scans nearly every vector anyway, and decoding SQ8 codes of
    a dimension SIMD does not cover costs more than reading floats (iALS's lifted vectors are padded to a multiple
    of 16 for this: ``als.SIMD_WIDTH``). Measured per catalogue on the tuning queries, not set by a size threshold
    that would only fit this machine."""
    if index.factory == "Flat" or vectors.nbytes > FLAT_MAX_BYTES or not len(queries):
        return index
    exact = VectorIndex.build(vectors, index.item_ids, "Flat")
    approximate_ms = median_query_ms(index, queries, k)
    exact_ms = median_query_ms(exact, queries, k)
    chosen = exact if exact_ms * FLAT_MIN_SPEEDUP < approximate_ms else index
    chosen.params.update(recall_vs_exact=1.0 if chosen is exact else index.params.get("recall_vs_exact"),
                         compared={index.factory: round(approximate_ms, 3), "Flat": round(exact_ms, 3)},
                         tuned_k=k)  # fmt: skip
    return chosen


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the exact top-``k`` by inner product (the ground truth for ANN recall)."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(vectors)))[1]


def ann_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (works on row numbers or ids)."""
    hits = [len(set(f.tolist()) & set(t.tolist())) / max(len(t), 1) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 1.0
