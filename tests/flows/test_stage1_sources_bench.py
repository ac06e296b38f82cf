"""The per-source cost bench on a version the pipeline published: every source is timed, the index choice is shown."""

from __future__ import annotations

import json
from pathlib import Path

from bench.stage1_sources import source_costs
from models.recommender.versions import read_manifest


def test_every_stage1_source_of_the_published_version_is_timed(published):
    _, summary = published
    version_dir = Path(summary["version"])
    result = source_costs(version_dir, users=20, passes=1)
    manifest = read_manifest(version_dir)
    assert set(result["median_ms"]) == {*manifest["stage1"]["config"]["weights"], "fusion"}
    assert all(ms > 0 for ms in result["median_ms"].values())
    assert abs(result["sum_of_medians_ms"] - sum(result["median_ms"].values())) < 0.01
    assert result["k_candidates"] == manifest["k_candidates"] and result["users"] > 0
    assert {name: entry["factory"] for name, entry in result["indexes"].items()} == {
        name: entry["factory"] for name, entry in manifest["stage1"]["indexes"].items()
    }
    json.dumps(result)  # what --out writes
