"""Training rows from served lists: which list an event is credited to, and which lists become groups."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.training.impressions import LoggedLists, impression_groups, impression_labels
from models.training.steps import user_folds

HOUR = 3600.0


def lists() -> pd.DataFrame:
    rows = []
    for request, user, at, items in (
        ("r1", "u1", 1000.0, "abc"),
        ("r2", "u1", 5000.0, "cad"),
        ("r3", "u2", 1000.0, "ab"),
    ):
        for rank, item in enumerate(items):
            rows.append({"request_id": request, "user_id": user, "item_id": item, "as_of": at, "rank": rank,
                         "features": [float(rank), 1.0]})  # fmt: skip
    return pd.DataFrame(rows)


def events(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "request_id"])


def test_an_event_is_credited_to_the_latest_list_that_showed_the_item():
    shown = lists()
    labels = impression_labels(shown, events([("u1", "c", "purchase", 6000.0, None)]), window_seconds=HOUR)
    credited = shown.assign(label=labels).query("label > 0")
    assert credited[["request_id", "item_id", "label"]].values.tolist() == [["r2", "c", 3]]


def test_a_named_list_gets_the_credit_and_views_or_late_events_get_none():
    shown = lists()
    outcome = events([
        ("u1", "c", "click", 6000.0, "r1"),          # names the older list
        ("u1", "a", "view", 1500.0, None),            # a view is not a positive
        ("u2", "b", "click", 1000.0 + 2 * HOUR, None),  # after the attribution window
        ("u2", "a", "add_to_cart", 1200.0, None),
    ])  # fmt: skip
    labels = impression_labels(shown, outcome, window_seconds=HOUR)
    credited = shown.assign(label=labels).query("label > 0")
    assert sorted(credited[["request_id", "item_id", "label"]].values.tolist()) == [["r1", "c", 1], ["r3", "a", 2]]


def test_groups_are_the_lists_with_a_positive_in_served_order():
    shown = lists().sample(frac=1.0, random_state=0)
    labels = impression_labels(shown, events([("u2", "b", "click", 1100.0, None)]), window_seconds=HOUR)
    data = impression_groups(shown, ["f", "g"], ["f", "g"], labels)
    assert data is not None
    assert data.groups.tolist() == [2] and data.group_users.tolist() == ["u2"]
    assert data.labels.tolist() == [0, 1] and data.features[:, 0].tolist() == [0.0, 1.0]
    assert impression_groups(shown, ["f"], ["f", "g"], labels) is None, "rows made for other features are not used"


def test_no_events_no_groups():
    logged = LoggedLists(lists(), ["f", "g"], pd.DataFrame(), HOUR)
    assert logged.groups(["f", "g"]) is None


def test_every_group_of_a_user_is_in_the_same_fold():
    users = np.array(["u1", "u2", "u1", "u3", "u2", "u1"])
    folds = user_folds(users, 2, seed=1)
    for user in set(users):
        assert len(set(folds[users == user])) == 1
