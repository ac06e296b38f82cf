"""Section 4: text embedding throughput and single-query latency per backend of ``make_encoder``.

Every backend encodes the same texts: the item texts (``item_texts``: title + description) of a seeded demo
catalog for throughput, the item titles (short, like search queries) one at a time for latency. Throughput uses the
pipeline's thread count (2), single queries one thread (as the service does). Agreement: cosine between each
backend's vector and torch's for the same text (min and mean over the throughput texts).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import load_reading, log, ratio, timed_calls

BACKENDS = ("torch", "onnx-int8")
BATCH_SIZE = 64


def demo_texts(n: int, seed: int = 42) -> tuple[list[str], list[str]]:
    from models.data import columns as C
    from models.data.demo_catalog import generate_demo_catalog
    from models.text.model import item_texts

    items = generate_demo_catalog(n_items=n, n_users=200, n_interactions=5_000, seed=seed).items
    return item_texts(items), items[C.TITLE].astype(str).tolist()


def run_embedding(
    texts: int = 2000, queries: int = 100, repeats: int = 3, threads: int = 2, cache_dir: Path | None = None
) -> dict[str, Any]:
    from models.text.encoders import make_encoder

    corpus, titles = demo_texts(texts)
    query_texts = titles[:queries]
    out: dict[str, Any] = {
        "texts": len(corpus),
        "mean_chars": round(float(np.mean([len(t) for t in corpus])), 1),
        "queries": len(query_texts),
        "query_mean_chars": round(float(np.mean([len(t) for t in query_texts])), 1),
        "batch_size": BATCH_SIZE,
        "throughput_threads": threads,
        "backends": {},
        "load_start": load_reading(),
    }
    reference: np.ndarray | None = None
    movielens = movielens_texts()
    movielens_reference: np.ndarray | None = None
    out["movielens_texts"] = len(movielens)
    for backend in BACKENDS:
        log(f"embedding: backend '{backend}'")
        section: dict[str, Any] = {}
        out["backends"][backend] = section
        try:
            started = time.perf_counter()
            encoder = make_encoder(backend, threads=threads, cache_dir=cache_dir)
            section["load_seconds"] = round(time.perf_counter() - started, 1)
        except ValueError as error:
            section.update({"available": False, "reason": str(error)})
            log(f"embedding: backend '{backend}' unavailable: {error}")
            continue
        except Exception as error:  # noqa: BLE001 - a broken backend is a finding, not a crash of the bench
            section.update({"available": False, "reason": f"{type(error).__name__}: {error}"})
            log(f"embedding: backend '{backend}' failed to load: {error}")
            continue
        section["available"] = True
        section["name"] = getattr(encoder, "name", backend)
        encoder.encode(corpus[:BATCH_SIZE], batch_size=BATCH_SIZE)  # warm
        walls, cpus = [], []
        vectors = None
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            vectors = encoder.encode(corpus, batch_size=BATCH_SIZE)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        assert vectors is not None
        wall = float(np.median(walls))
        section["throughput"] = {
            "texts_per_s": round(len(corpus) / wall, 1),
            "texts_per_cpu_s": round(len(corpus) / float(np.median(cpus)), 1),
            "pass_seconds": [round(w, 2) for w in walls],
        }
        if reference is None and backend == "torch":
            reference = vectors
        if reference is not None:
            cos = np.einsum("ij,ij->i", vectors, reference) / (
                np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
            )
            section["cosine_vs_torch"] = cosine_summary(cos)
        if movielens:
            if backend == "torch":
                movielens_reference = movielens_vectors(encoder, movielens)
            section["movielens"] = _corpus_pass(encoder, movielens, repeats, movielens_reference)
        del encoder
        single = make_encoder(backend, threads=1, cache_dir=cache_dir)
        w, c, raw = _single_queries(single, query_texts, repeats)
        section["single_query"] = {"wall": w, "cpu": c, "raw": raw}
        t0 = time.perf_counter()
        single.encode(corpus, batch_size=BATCH_SIZE)
        section["throughput"]["texts_per_s_1_thread"] = round(len(corpus) / (time.perf_counter() - t0), 1)
        del single
        log(
            f"embedding: {backend}: {section['throughput']['texts_per_s']} texts/s (2 threads), single query p50 "
            f"{w['p50_ms']:.2f} ms p99 {w['p99_ms']:.2f} ms (1 thread)"
        )
    torch_section = out["backends"].get("torch", {})
    for backend, section in out["backends"].items():
        if backend == "torch" or not section.get("available") or not torch_section.get("available"):
            continue
        section["throughput_ratio_vs_torch"] = ratio(
            section["throughput"]["texts_per_s"], torch_section["throughput"]["texts_per_s"]
        )
        if "movielens" in section and "movielens" in torch_section:
            section["movielens"]["throughput_ratio_vs_torch"] = ratio(
                section["movielens"]["texts_per_s"], torch_section["movielens"]["texts_per_s"]
            )
        section["latency_p50_ratio_vs_torch"] = ratio(
            torch_section["single_query"]["wall"]["p50_ms"], section["single_query"]["wall"]["p50_ms"]
        )
    out["load_end"] = load_reading()
    return out


def movielens_texts(limit: int = 3000) -> list[str]:
    """Item texts (title + genres) of the first ``limit`` MovieLens ml-latest-small movies, the corpus of the
    issue's reference figure (348 texts/s for torch); empty when the data is absent."""
    from models.data.movielens import load_movielens
    from models.settings import PROJECT_ROOT
    from models.text.model import item_texts

    folder = Path(os.environ.get("RECSYS_MOVIELENS_DIR", PROJECT_ROOT.parent / "shared" / "data" / "ml-latest-small"))
    if not (folder / "movies.csv").exists():
        return []
    return item_texts(load_movielens(folder).items.head(limit))


def movielens_vectors(encoder: Any, texts: list[str]) -> np.ndarray:
    return np.asarray(encoder.encode(texts, batch_size=BATCH_SIZE))


def cosine_summary(cos: np.ndarray) -> dict[str, float]:
    return {"min": round(float(cos.min()), 6), "p1": round(float(np.percentile(cos, 1)), 6),
            "mean": round(float(cos.mean()), 6), "share_below_0.99": round(float((cos < 0.99).mean()), 5)}  # fmt: skip


def _corpus_pass(encoder: Any, texts: list[str], repeats: int, reference: np.ndarray | None) -> dict[str, Any]:
    """Throughput (2 threads, median of passes) on another corpus and agreement with torch on it."""
    walls, vectors = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        vectors = movielens_vectors(encoder, texts)
        walls.append(time.perf_counter() - started)
    result: dict[str, Any] = {"texts": len(texts), "texts_per_s": round(len(texts) / float(np.median(walls)), 1)}
    if reference is not None and vectors is not None:
        result["cosine_vs_torch"] = cosine_summary(np.einsum("ij,ij->i", vectors, reference))
    return result


def _single_queries(encoder: Any, texts: list[str], repeats: int) -> tuple[dict, dict, dict]:
    encoder.encode(texts[:5], batch_size=1)  # warm
    return timed_calls(lambda text: encoder.encode([text], batch_size=1), texts, repeats)
