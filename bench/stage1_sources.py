"""What each stage-1 source costs per request, on a published version loaded as the service loads it.

For known users of the version (their online-store features): each candidate source's ``retrieve`` at the served
K, then the fusion, one FAISS thread, several passes; medians per source in milliseconds. It shows where a
request's retrieval time goes (which source to cap, which index to change) and, run on two versions, what a
change of index or source bought.

``python -m bench.stage1_sources --version-dir STATE/versions/demo/current [--users 300] [--passes 3]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.serving import load_fixture
from models.retrieval.indexes import one_search_thread


def source_costs(version_dir: Path, users: int = 300, passes: int = 3) -> dict[str, Any]:
    """Median ms per request of every source and of the fusion, at the version's K, with each index's settings."""
    fixture = load_fixture(version_dir, users)
    stage1 = fixture.recommender.stage1
    k = int(fixture.manifest["k_candidates"])
    queries = [stage1.with_rows(prepared.retrieval.query) for prepared in fixture.prepared]
    spent: dict[str, list[float]] = {source.name: [] for source in stage1.sources}
    spent["fusion"] = []
    with one_search_thread():
        for _ in range(passes):
            for query in queries:
                results = []
                for source in stage1.sources:
                    started = time.perf_counter()
                    results.append(stage1.available(source.retrieve(query, k), query.as_of))
                    spent[source.name].append(time.perf_counter() - started)
                started = time.perf_counter()
                stage1.fuse(results, k)
                spent["fusion"].append(time.perf_counter() - started)
    median_ms = {name: round(float(np.median(times)) * 1000.0, 3) for name, times in spent.items()}
    indexes = fixture.manifest["stage1"]["indexes"]
    return {
        "version": fixture.manifest["version"],
        "items": len(stage1.item_ids),
        "k_candidates": k,
        "users": len(queries),
        "passes": passes,
        "median_ms": dict(sorted(median_ms.items(), key=lambda kv: -kv[1])),
        "sum_of_medians_ms": round(sum(median_ms.values()), 3),
        "indexes": {name: {"factory": entry["factory"], **entry.get("params", {})} for name, entry in indexes.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version-dir", type=Path, required=True, help="a published version folder")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = source_costs(args.version_dir, args.users, args.passes)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
