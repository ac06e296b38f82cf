"""The re-ranker's training set, built inside *train* on the validation cut: for every validation user, stage-1
candidates (stage 1 fitted on the inner history) as of the user's validation cut, labelled by the validation
window's positives — the same positives the evaluation counts. One group per user.

Features: the user's stored features joined point-in-time through Feast (one row per user and cut time); item
features from the point-in-time snapshot function itself, as of the cut (the same function writes the item table a
version serves; a Feast as-of join of millions of (item, time) rows would pair each with every earlier snapshot of
its item); cross features from the same ``Recommender.feature_matrix`` the service uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from feast import FeatureStore

from models.data import columns as C
from models.data.clock import whole_seconds
from models.data.splits import Split, is_positive, pairs_seen_in, sample_users
from models.features.snapshots import FeatureContext, user_snapshots
from models.features.spec import EVENT_TIMESTAMP, USER_VIEW
from models.features.store import append_user_snapshots, point_in_time_join
from models.progress import progress
from models.ranking.ranker import RankingData
from models.recommender.recommender import Recommender
from models.recommender.request import Request
from models.retrieval.indexes import one_search_thread
from models.settings import Settings

EVENT_GRADES = {C.CLICK: 1, C.ADD_TO_CART: 2, C.PURCHASE: 3}
"""Label grades of the positives by how much they are worth: a purchase outranks a cart, a cart a click."""


class LeakageError(AssertionError):
    """A feature or label time is not where the protocol requires it."""


def label_grades(holdout: pd.DataFrame, history: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per user and item, the label of the held-out window: the evaluation's positives (rating ≥ 4, or a click,
    cart or purchase) not seen in history, graded by event type (ratings: 1); everything else is 0."""
    positive = holdout[is_positive(holdout).to_numpy()]
    positive = positive[~pairs_seen_in(history, positive)]
    grades = positive[C.EVENT_TYPE].map(EVENT_GRADES).fillna(1).astype(int).to_numpy()
    labels: dict[str, dict[str, int]] = {}
    for user, item, grade in zip(positive[C.USER_ID], positive[C.ITEM_ID], grades, strict=True):
        mine = labels.setdefault(user, {})
        mine[item] = max(mine.get(item, 0), int(grade))
    return labels


@dataclass
class TrainingSet:
    data: RankingData
    stats: dict[str, float]


def choose_training_users(inner: Split, max_users: int | None, seed: int) -> list[str]:
    """Users with history before the validation cut and a positive in the validation window (sampled when capped)."""
    labels = label_grades(inner.holdout, inner.history)
    return sample_users(list(set(labels) & set(inner.history[C.USER_ID])), max_users, seed)


def build_training_set(
    recommender: Recommender, context: FeatureContext, inner: Split, outer_cut_times: pd.Series,
    store: FeatureStore, settings: Settings, dataset: str, users: list[str],
) -> TrainingSet:  # fmt: skip
    """Candidates (the ``settings.candidates_k`` best, in stage-1 order) for ``users`` as of their validation cut."""
    cut = inner.cut_times().loc[users]
    as_of = dict(zip(users, whole_seconds(cut).astype(float).tolist(), strict=True))
    user_frame = user_snapshots(context, users, cut.to_numpy())
    append_user_snapshots(settings, dataset, user_frame)
    check_no_leakage(cut, inner, outer_cut_times)
    user_rows = point_in_time_join(store, pd.DataFrame({C.USER_ID: users, EVENT_TIMESTAMP: cut.to_numpy()}), USER_VIEW)
    histories = user_frame.set_index(C.USER_ID)
    labels = label_grades(inner.holdout, inner.history)
    retrievals = {}
    with one_search_thread():  # one query at a time
        for user in progress(users, desc="training set: stage 1", unit="user"):
            request = Request(user_id=user, k=settings.candidates_k, as_of=as_of[user])
            retrieval = recommender.retrieve(request, histories.loc[user].to_dict())
            mine = labels.get(user, {})
            grades = np.array([mine.get(item, 0) for item in retrieval.candidates.item_ids.tolist()], dtype=np.int32)
            if grades.max(initial=0) > 0:  # no gradient without a positive in the group
                retrievals[user] = (request, retrieval, grades)
    if not retrievals:
        raise ValueError("no training user has a labelled candidate: stage 1 retrieves none of the label items")
    stored_users = user_rows.set_index(C.USER_ID)
    blocks, label_parts, group_sizes = [], [], []
    for user, (request, retrieval, grades) in progress(retrievals.items(), desc="training set: features",
                                                       total=len(retrievals), unit="user"):  # fmt: skip
        items = recommender.item_features.block(retrieval.rows, request.as_of)
        blocks.append(recommender.feature_matrix(request, retrieval, stored_users.loc[user].to_dict(), items))
        label_parts.append(grades)
        group_sizes.append(len(grades))
    labels_all = np.concatenate(label_parts)
    data = RankingData(np.vstack(blocks), labels_all, np.array(group_sizes), np.array(list(retrievals)))
    stats = {
        "groups": float(len(group_sizes)),
        "rows": float(len(labels_all)),
        "positive_rows": float((labels_all > 0).sum()),
        "mean_group_size": float(np.mean(group_sizes)),
        "users_without_a_retrieved_positive": float(len(users) - len(retrievals)),
    }
    return TrainingSet(data, stats)


def check_no_leakage(feature_times: pd.Series, inner: Split, outer_cut_times: pd.Series) -> None:
    """Every feature time is at or before every label of its user, and every label at or before the user's test
    start (ties at the cuts are split by position, as the protocol cuts by position)."""
    users = feature_times.index
    first_label = inner.holdout.groupby(C.USER_ID)[C.TIMESTAMP].min().reindex(users)
    last_label = inner.holdout.groupby(C.USER_ID)[C.TIMESTAMP].max().reindex(users)
    test_start = outer_cut_times.reindex(users)
    if (feature_times > first_label).any():
        raise LeakageError(f"features after labels for users {list(users[feature_times > first_label][:5])}")
    late = last_label > test_start
    if late.any():
        raise LeakageError(f"labels after the test start for users {list(users[late][:5])}")
