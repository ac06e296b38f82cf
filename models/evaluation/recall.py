"""Stage-1 recall under the shared protocol: Recall@K per candidate source and merged, over test users queried as
of their cut time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.clock import unix_seconds
from models.data.contract import Dataset
from models.data.splits import Split, evaluation_split, is_positive, relevant_items, sample_users
from models.retrieval.sources import UserQuery
from models.retrieval.stage1 import Stage1, Stage1Config, fit_stage1, stage1_summary
from models.settings import Settings

RECALL_KS = (50, 100, 200, 500, 1000)


@dataclass(frozen=True)
class History:
    """One user's interactions in time order (unix seconds)."""

    items: np.ndarray
    times: np.ndarray
    positive: np.ndarray


def build_histories(interactions: pd.DataFrame) -> dict[str, History]:
    """Per user, items / times / positive flags sorted by time."""
    ordered = interactions.sort_values([C.USER_ID, C.TIMESTAMP], kind="stable")
    users = ordered[C.USER_ID].to_numpy()
    items = ordered[C.ITEM_ID].to_numpy().astype(str)
    seconds = unix_seconds(ordered[C.TIMESTAMP])
    positive = is_positive(ordered).to_numpy()
    bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(users)]])
    return {str(users[s]): History(items[s:e], seconds[s:e], positive[s:e]) for s, e in zip(starts, ends, strict=True)}


def make_query(user_id: str | None, history: History | None, as_of: float, exclude_seen: bool = True) -> UserQuery:
    """A query from a user's history: positives drive the text query (all items if none is positive)."""
    if history is None:
        return UserQuery(user_id, as_of)
    before = history.times < as_of
    items, times, positive = history.items[before], history.times[before], history.positive[before]
    if positive.any():
        text_items, text_times = items[positive], times[positive]
    else:
        text_items, text_times = items, times
    return UserQuery(
        user_id=user_id,
        as_of=as_of,
        history_items=text_items.tolist(),
        history_times=text_times.tolist(),
        exclude=frozenset(items.tolist()) if exclude_seen else frozenset(),
    )


def evaluate_stage1(
    stage1: Stage1, split: Split, max_users: int | None, seed: int, ks: Sequence[int] = RECALL_KS
) -> dict[str, dict[str, float]]:
    """Recall@K per source and merged (keys: source → str(K)), over test users with a positive, each queried as of
    their cut time."""
    relevant = relevant_items(split)
    users = sample_users(list(relevant), max_users, seed)
    histories = build_histories(split.history)
    cuts = split.cut_times()
    cut_times = dict(zip(cuts.index, unix_seconds(cuts), strict=True))
    k_max = max(ks)
    totals: dict[str, dict[int, float]] = {s.name: dict.fromkeys(ks, 0.0) for s in stage1.sources}
    totals["merged"] = dict.fromkeys(ks, 0.0)
    for user in users:
        query = make_query(user, histories.get(user), cut_times[user])
        results = stage1.retrieve_all(query, k_max)
        wanted = relevant[user]
        for result in results:
            ids = stage1.item_ids[result.rows]
            for k in ks:
                totals[result.source][k] += len(wanted.intersection(ids[:k].tolist())) / len(wanted)
        merged = stage1.fuse(results, k_max).item_ids.tolist()
        for k in ks:
            totals["merged"][k] += len(wanted.intersection(merged[:k])) / len(wanted)
    return {name: {str(k): value / len(users) for k, value in by_k.items()} for name, by_k in totals.items()}


def evaluate_stage1_step(dataset: Dataset, text_vectors: np.ndarray, settings: Settings) -> dict[str, Any]:
    """Fit stage 1 on the protocol's train split and report Recall@K per source and merged on its test split."""
    split = evaluation_split(dataset.interactions, settings.test_fraction)
    stage1 = fit_stage1(split.history, dataset.items, text_vectors, Stage1Config.from_settings(settings))
    started = time.perf_counter()
    recall = evaluate_stage1(stage1, split, max_users=settings.recall_max_users, seed=settings.seed)
    stage1.timings["evaluate_s"] = time.perf_counter() - started
    return {"recall": recall, **stage1_summary(stage1)}
