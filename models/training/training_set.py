"""The re-ranker's training set: stage-1 candidates for training users as of their inner cut time inside *train*,
graded labels from the label window, stored features joined point-in-time through Feast, cross features from the
same ``Recommender.feature_matrix`` the service uses. One group per user request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from feast import FeatureStore

from models.data import columns as C
from models.data.clock import whole_seconds
from models.data.splits import Split, sample_users
from models.features.assembly import ItemBlock
from models.features.snapshots import FeatureContext, item_snapshots, user_snapshots
from models.features.spec import EVENT_TIMESTAMP, ITEM_VIEW
from models.features.store import append_snapshots, append_user_snapshots, training_frame
from models.ranking.ranker import RankingData
from models.recommender.recommender import Recommender
from models.recommender.request import Request
from models.settings import Settings

EVENT_GRADES = {C.VIEW: 1, C.CLICK: 2, C.ADD_TO_CART: 3, C.PURCHASE: 4}


class LeakageError(AssertionError):
    """A feature or label time is not where the protocol requires it."""


def interaction_grades(interactions: pd.DataFrame) -> np.ndarray:
    """purchase 4 > add-to-cart 3 > click 2 > view 1; ratings: ≥ 4.5 → 2, ≥ 4 → 1, lower → 0."""
    by_event = interactions[C.EVENT_TYPE].map(EVENT_GRADES).fillna(0).to_numpy(dtype=np.int32)
    rating = interactions[C.RATING].to_numpy(dtype=float)
    by_rating = np.where(rating >= 4.5, 2, np.where(rating >= 4.0, 1, 0))
    return np.where(np.isnan(rating), by_event, by_rating).astype(np.int32)


def label_table(label_window: pd.DataFrame) -> pd.Series:
    """Best grade per (user, item) in the label window."""
    grades = pd.Series(interaction_grades(label_window), index=pd.MultiIndex.from_arrays(
        [label_window[C.USER_ID].to_numpy(), label_window[C.ITEM_ID].to_numpy()]))  # fmt: skip
    return grades.groupby(level=[0, 1]).max()


@dataclass
class TrainingSet:
    data: RankingData
    entity_rows: pd.DataFrame
    stats: dict[str, float]


def choose_training_users(inner: Split, max_users: int | None, seed: int) -> list[str]:
    """Users with at least one label-window interaction (a seeded sample when capped)."""
    return sample_users(list(set(inner.holdout[C.USER_ID]) & set(inner.history[C.USER_ID])), max_users, seed)


def build_training_set(
    recommender: Recommender,
    context: FeatureContext,
    inner: Split,
    outer_cut_times: pd.Series,
    store: FeatureStore,
    settings: Settings,
    dataset: str,
    users: list[str],
) -> TrainingSet:
    """Candidates from ``recommender`` (stage 1 fit on the fit window) for ``users`` as of their inner cut time."""
    cut = inner.cut_times().loc[users]
    as_of = pd.Series(whole_seconds(cut).astype(float), index=cut.index)
    user_frame = user_snapshots(context, users, cut.to_numpy())
    user_rows = user_frame.set_index(C.USER_ID)
    labels = label_table(inner.holdout)
    grades_of: dict[str, dict[str, int]] = {}
    for (user, item), grade in labels.items():
        grades_of.setdefault(user, {})[item] = int(grade)
    request_rows = []
    retrievals = {}
    for user in users:
        request = Request(user_id=user, k=settings.candidates_k, as_of=float(as_of[user]))
        retrieval = recommender.retrieve(request, user_rows.loc[user].to_dict())
        item_ids = retrieval.candidates.item_ids
        mine = grades_of.get(user, {})
        grades = np.array([mine.get(item, 0) for item in item_ids.tolist()], dtype=np.int32)
        if grades.max(initial=0) <= 0:
            continue  # no gradient without a positive in the group
        retrievals[user] = (request, retrieval, grades.astype(np.int32))
        request_rows.append(pd.DataFrame({C.USER_ID: user, C.ITEM_ID: item_ids, EVENT_TIMESTAMP: cut[user]}))
    if not retrievals:
        raise ValueError("no training user has a labelled candidate: stage 1 retrieves none of the label items")
    entity_rows = pd.concat(request_rows, ignore_index=True)
    item_frame = item_snapshots(context, entity_rows[C.ITEM_ID].to_numpy(), entity_rows[EVENT_TIMESTAMP].to_numpy())
    append_user_snapshots(settings, dataset, user_frame[user_frame[C.USER_ID].isin(list(retrievals))])
    append_snapshots(settings, dataset, ITEM_VIEW, item_frame.drop_duplicates([C.ITEM_ID, EVENT_TIMESTAMP]))
    frame = training_frame(store, entity_rows)
    check_no_leakage(entity_rows, inner, outer_cut_times)
    all_items = ItemBlock.from_frame(frame, recommender.spec)
    frame_items = frame[C.ITEM_ID].to_numpy()
    blocks, label_parts, group_sizes = [], [], []
    start = 0
    for user, (request, retrieval, grades) in retrievals.items():
        rows = np.arange(start, start + len(grades))
        start += len(grades)
        if (frame_items[rows] != retrieval.candidates.item_ids).any():
            raise RuntimeError(f"feature rows of user {user} are out of order")
        user_features = frame.iloc[rows[0]].to_dict()
        blocks.append(recommender.feature_matrix(request, retrieval, user_features, all_items.take(rows)))
        label_parts.append(grades)
        group_sizes.append(len(grades))
    labels_all = np.concatenate(label_parts)
    data = RankingData(np.vstack(blocks), labels_all, np.array(group_sizes), np.array(list(retrievals)))
    stats = {
        "groups": float(len(group_sizes)),
        "rows": float(len(labels_all)),
        "positive_rows": float((labels_all > 0).sum()),
        "mean_group_size": float(np.mean(group_sizes)),
    }
    return TrainingSet(data, entity_rows, stats)


def check_no_leakage(entity_rows: pd.DataFrame, inner: Split, outer_cut_times: pd.Series) -> None:
    """Every feature time is before every label of its user, and every label is before the user's test start."""
    feature_time = entity_rows.groupby(C.USER_ID)[EVENT_TIMESTAMP].max()
    first_label = inner.holdout.groupby(C.USER_ID)[C.TIMESTAMP].min().reindex(feature_time.index)
    last_label = inner.holdout.groupby(C.USER_ID)[C.TIMESTAMP].max().reindex(feature_time.index)
    test_start = outer_cut_times.reindex(feature_time.index)
    if (feature_time > first_label).any():
        raise LeakageError(
            f"features after labels for users {list(feature_time.index[feature_time > first_label][:5])}"
        )
    late = last_label > test_start  # equal times are ties split by position, as the protocol cuts by position
    if late.any():
        raise LeakageError(f"labels after the test start for users {list(feature_time.index[late][:5])}")
