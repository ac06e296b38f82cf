"""Training rows from what was served: each logged list is a group, its items labelled by what the user did next.

Unlike the candidate-based training set (where an unlabelled candidate may simply never have been shown), a shown
item without a click is a real negative. The rows are the feature rows logged at serving time, so the model learns
from exactly what it scored. An event is credited to the list it names (``request_id``), else to the latest list
that showed the item to the user within the attribution window before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.data import columns as C
from models.ranking.ranker import RankingData
from models.training.training_set import EVENT_GRADES

REQUEST_ID = "request_id"


def impression_labels(shown: pd.DataFrame, events: pd.DataFrame, window_seconds: float) -> pd.Series:
    """The grade (purchase 3 > cart 2 > click 1, else 0) each shown row earned, aligned with ``shown``.

    ``shown``: request_id, user_id, item_id, as_of (unix seconds). ``events``: user_id, item_id, event_type,
    timestamp (unix seconds) and optionally request_id."""
    if REQUEST_ID not in events:
        events = events.assign(**{REQUEST_ID: None})
    grades = events[C.EVENT_TYPE].map(EVENT_GRADES).fillna(0).astype(int)
    positive = events.loc[grades > 0].assign(grade=grades[grades > 0])
    named = positive[REQUEST_ID].notna() if REQUEST_ID in positive else pd.Series(False, index=positive.index)
    keys = [REQUEST_ID, C.USER_ID, C.ITEM_ID]
    by_name = positive.loc[named, [*keys, "grade"]]
    unnamed = positive.loc[~named, [C.USER_ID, C.ITEM_ID, C.TIMESTAMP, "grade"]].sort_values(C.TIMESTAMP)
    lists = shown[[*keys, "as_of"]].sort_values("as_of")
    by_time = pd.merge_asof(
        unnamed.astype({C.TIMESTAMP: float}), lists.astype({"as_of": float}), left_on=C.TIMESTAMP, right_on="as_of",
        by=[C.USER_ID, C.ITEM_ID], direction="backward", tolerance=window_seconds,
    ).dropna(subset=[REQUEST_ID])  # fmt: skip
    credited = pd.concat([by_name, by_time[[*keys, "grade"]]]).groupby(keys)["grade"].max()
    index = pd.MultiIndex.from_frame(shown[keys])
    return pd.Series(credited.reindex(index).fillna(0).astype(int).to_numpy(), index=shown.index)


def impression_groups(
    shown: pd.DataFrame, feature_names: Sequence[str], expected_names: Sequence[str], labels: pd.Series
) -> RankingData | None:  # fmt: skip
    """One group per re-ranked list with at least one positive, rows in served order (None when there is none, or
    the logged rows were made for a different feature list than the model's)."""
    if list(feature_names) != list(expected_names):
        return None
    ranked = shown.assign(label=labels)
    ranked = ranked[ranked["features"].map(len) == len(expected_names)]
    useful = ranked.groupby(REQUEST_ID)["label"].transform("max") > 0
    ranked = ranked[useful].sort_values([REQUEST_ID, "rank"])
    if ranked.empty:
        return None
    sizes = ranked.groupby(REQUEST_ID, sort=False).size()
    users = ranked.groupby(REQUEST_ID, sort=False)[C.USER_ID].first()
    labels_all = ranked["label"].to_numpy(np.int32)
    relevant = ranked.groupby(REQUEST_ID, sort=False)["label"].apply(lambda g: int((g > 0).sum()))
    return RankingData(np.vstack(ranked["features"].to_numpy()).astype(np.float32), labels_all, sizes.to_numpy(),
                       users.to_numpy().astype(str), relevant.to_numpy())  # fmt: skip


def concat_ranking_data(first: RankingData, second: RankingData) -> RankingData:
    """``first``'s groups, then ``second``'s."""
    relevant = (
        np.concatenate([first.relevant, second.relevant])
        if first.relevant is not None and second.relevant is not None
        else None
    )
    return RankingData(np.vstack([first.features, second.features]), np.concatenate([first.labels, second.labels]),
                       np.concatenate([first.groups, second.groups]),
                       np.concatenate([first.group_users, second.group_users]), relevant)  # fmt: skip


@dataclass(frozen=True)
class LoggedLists:
    """What the service logged since the data began: the shown lists (one row per item, with feature rows named
    ``feature_names``) and the events that followed (user_id, item_id, event_type, timestamp, request_id)."""

    shown: pd.DataFrame
    feature_names: list[str]
    events: pd.DataFrame
    window_seconds: float

    def groups(self, expected_names: Sequence[str]) -> RankingData | None:
        if self.shown.empty or self.events.empty:
            return None
        labels = impression_labels(self.shown, self.events, self.window_seconds)
        return impression_groups(self.shown, self.feature_names, expected_names, labels)
