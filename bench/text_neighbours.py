"""Do a backend's text vectors find the same neighbours as PyTorch's? Speed and neighbour agreement per encoder.

For a seeded demo catalogue's item texts: each backend's throughput (median of passes, 2 threads where the backend
uses threads), the share of each item's ``k`` nearest text neighbours (cosine, the item itself excluded) that are
also among PyTorch's ``k`` nearest, and the share of its 10 nearest that are of the item's own category — the
semantic source's job on a catalogue. Vectors of different models live in different spaces, so cosine between them
says nothing; their neighbour lists can be compared.

``python -m bench.text_neighbours --texts 4000`` prints a table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import log

BACKENDS = ("torch", "onnx-int8", "static")


def nearest(vectors: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` most similar other rows (exact, inner product of normalised vectors)."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def overlap(left: np.ndarray, right: np.ndarray) -> float:
    """Mean share of each row's neighbours that the other list also holds."""
    return float(np.mean([len(np.intersect1d(a, b)) / len(a) for a, b in zip(left, right, strict=True)]))


def same_category(neighbours: np.ndarray, categories: np.ndarray) -> float:
    return float(np.mean(categories[neighbours] == categories[:, None]))


def run(texts: int, k: int, repeats: int, cache_dir: Path) -> dict[str, Any]:
    from models.data import columns as C
    from models.data.demo_catalog import generate_demo_catalog
    from models.text.encoders import make_encoder
    from models.text.model import item_texts

    items = generate_demo_catalog(n_items=texts, n_users=200, n_interactions=5_000, seed=42).items
    corpus, categories = item_texts(items), items[C.CATEGORY].to_numpy()
    out: dict[str, Any] = {"texts": len(corpus), "k": k, "backends": {}}
    reference: np.ndarray | None = None
    for backend in BACKENDS:
        encoder = make_encoder(backend, threads=2, cache_dir=cache_dir)
        walls, vectors = [], np.empty(0)
        for _ in range(repeats):
            started = time.perf_counter()
            vectors = encoder.encode(corpus)
            walls.append(time.perf_counter() - started)
        found = nearest(vectors, k)
        reference = found if reference is None else reference
        out["backends"][backend] = {
            "texts_per_s": round(len(corpus) / float(np.median(walls)), 1),
            "overlap_with_torch": round(overlap(found, reference), 3),
            "same_category_at_10": round(same_category(found[:, :10], categories), 3),
        }
        log(f"text neighbours: {backend}: {out['backends'][backend]}")
    return out


def lines(result: dict[str, Any]) -> list[str]:
    rows = [
        f"{result['texts']:,} demo item texts; neighbours by exact cosine search",
        "",
        f"| backend | texts/s | top-{result['k']} neighbours shared with torch | top-10 of the item's category |",
        "|---|---|---|---|",
    ]
    for backend, figures in result["backends"].items():
        rows.append(f"| {backend} | {figures['texts_per_s']:,.0f} | {figures['overlap_with_torch']:.3f} | "
                    f"{figures['same_category_at_10']:.3f} |")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.text_neighbours", description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the int8 and static models are built")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        result = run(args.texts, args.k, args.repeats, args.cache_dir or Path(scratch))
    print("\n".join(lines(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
