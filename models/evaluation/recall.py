"""Stage-1 recall under the shared protocol: Recall@K per candidate source and merged, over test users queried as
the service queries them (their features as of their cut time)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from models.progress import progress
from models.recommender.request import Request
from models.recommender.retrieval import query_for
from models.retrieval.indexes import one_search_thread
from models.retrieval.sources import SourceResult, in_sorted
from models.retrieval.stage1 import Stage1

RECALL_KS = (50, 100, 200, 500, 1000)


def stage1_recall(
    stage1: Stage1, users: Sequence[str], as_of: Mapping[str, float], features: Mapping[str, Mapping],
    relevant: Mapping[str, set[str]], ks: Sequence[int] = RECALL_KS,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Recall@K per source and merged (keys: source → str(K)), averaged over ``users``."""
    k_max = max(ks)
    totals: dict[str, dict[int, float]] = {s.name: dict.fromkeys(ks, 0.0) for s in stage1.sources}
    totals["merged"] = dict.fromkeys(ks, 0.0)
    row_of = pd.Index(stage1.item_ids)
    with one_search_thread():  # one query at a time
        for user in progress(users, desc="stage-1 recall", unit="user"):
            query, _ = query_for(Request(user_id=user, as_of=as_of[user]), features[user])
            results = stage1.retrieve_all(query, k_max)
            wanted = relevant[user]
            wanted_rows = row_of.get_indexer(list(wanted))
            wanted_rows = np.unique(wanted_rows[wanted_rows >= 0])
            for result in [*results, SourceResult("merged", stage1.fuse(results, k_max).rows, np.empty(0))]:
                hits = np.flatnonzero(in_sorted(result.rows, wanted_rows))  # positions of relevant items
                for k in ks:
                    totals[result.source][k] += np.count_nonzero(hits < k) / len(wanted)
    count = max(len(users), 1)
    return {name: {str(k): value / count for k, value in by_k.items()} for name, by_k in totals.items()}
