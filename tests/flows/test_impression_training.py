"""Served lists train the next re-ranker when asked: the service logs them, events name them, the pipeline learns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from flows.pipeline import pipeline_flow
from models.data import columns as C
from models.live.impressions import impressions_dir, read_impressions
from models.ranking.rules import Filters
from models.recommender.versions import VersionStore
from serving.runtime import Runtime


def test_the_next_run_trains_on_served_lists_and_their_outcomes(published, tmp_path: Path):
    settings, _ = published
    state = tmp_path / "state"
    shutil.copytree(settings.state_dir, state, symlinks=True)  # `current` stays a pointer
    copy = settings.model_copy(update={"state_dir": state, "training_impressions": True})
    runtime = Runtime(copy)
    runtime.start()
    users = [f"u{u:05d}" for u in range(60)]
    for user in users:
        _, result = runtime.recommend(user, 10, Filters(), True, False)
        if result.fallback:
            continue
        picked = [result.items[1].item_id, result.items[3].item_id]
        runtime.accept_events([
            {C.USER_ID: user, C.ITEM_ID: picked[0], C.EVENT_TYPE: "click", "request_id": result.request_id},
            {C.USER_ID: user, C.ITEM_ID: picked[1], C.EVENT_TYPE: "purchase"},  # credited by time
        ])  # fmt: skip
    runtime.close()  # writes the buffered impressions
    shown, names = read_impressions(impressions_dir(copy, "demo"))
    assert shown.request_id.nunique() >= 40 and len(names) > 0

    served = VersionStore(copy.versions_dir).current()
    summary = pipeline_flow("demo", None, copy, force=True)  # whether it beats the champion is not the point here
    assert summary["release"]["publish"] and summary["release"]["reason"].startswith(("forced", "beats"))
    assert VersionStore(copy.versions_dir).current() != served, "the run trained and published a new version"
    (training,) = [p for p in (state / "work" / "training_set").glob("*/done.json") if p.stat().st_mtime_ns
                   > (state / "live").stat().st_mtime_ns]  # fmt: skip
    stats = json.loads(training.read_text())
    assert stats["impression_groups"] >= 40, stats
