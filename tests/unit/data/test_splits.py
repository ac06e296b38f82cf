"""Splits on hand-built timelines with expected rows worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.data import columns as C
from models.data.splits import (
    evaluation_split,
    is_positive,
    label_split,
    pairs_seen_in,
    relevant_items,
    split_by_user_time,
)


def timeline(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            C.USER_ID: [r[0] for r in rows],
            C.ITEM_ID: [r[1] for r in rows],
            C.TIMESTAMP: pd.to_datetime([r[2] for r in rows], unit="D", utc=True),
            C.RATING: [r[3] for r in rows],
            C.EVENT_TYPE: C.RATED,
        }
    )


# user a: 5 interactions -> floor(0.8*5) = 4 in train, last 1 in test
# user b: 10 interactions -> 8 train, 2 test; given out of time order on purpose
# user c: 1 interaction -> floor(0.8) = 0: its only interaction is test
ROWS = [("a", f"i{t}", t, 4.0) for t in range(5)] + [("b", f"j{t}", t, 5.0 if t % 2 else 1.0) for t in (9, 3, 0, 1, 2, 8, 4, 5, 6, 7)] + [("c", "k", 3, 4.5)]  # fmt: skip


def test_evaluation_split_cuts_each_user_by_time():
    split = evaluation_split(timeline(ROWS), test_fraction=0.2)
    test_items = split.holdout.groupby(C.USER_ID)[C.ITEM_ID].agg(list).to_dict()
    assert test_items == {"a": ["i4"], "b": ["j8", "j9"], "c": ["k"]}
    train_items = split.history.groupby(C.USER_ID)[C.ITEM_ID].agg(list).to_dict()
    assert train_items == {"a": ["i0", "i1", "i2", "i3"], "b": [f"j{t}" for t in range(8)]}


def test_ties_keep_input_order():
    rows = [("a", "x", 1, 4.0), ("a", "y", 1, 4.0), ("a", "z", 1, 4.0), ("a", "w", 1, 4.0), ("a", "v", 1, 4.0)]
    split = evaluation_split(timeline(rows))
    assert split.holdout[C.ITEM_ID].tolist() == ["v"]


def test_label_split_stays_inside_train():
    split = evaluation_split(timeline(ROWS))
    inner = label_split(split.history, label_fraction=0.25)
    # a: 4 train rows -> floor(0.75*4) = 3 fit, 1 label; b: 8 -> 6 fit, 2 labels
    assert inner.holdout.groupby(C.USER_ID)[C.ITEM_ID].agg(list).to_dict() == {"a": ["i3"], "b": ["j6", "j7"]}
    assert (inner.cut_times() < split.cut_times().loc[["a", "b"]]).all()
    assert inner.cut_times().to_dict() == {
        "a": pd.Timestamp(3, unit="D", tz="UTC"),
        "b": pd.Timestamp(6, unit="D", tz="UTC"),
    }


def test_positives_and_relevant_items():
    split = evaluation_split(timeline(ROWS))
    # b's test rows: j8 (rating 1.0, negative), j9 (5.0, positive)
    assert relevant_items(split) == {"a": {"i4"}, "b": {"j9"}, "c": {"k"}}


def test_items_seen_in_train_are_not_relevant():
    rows = [("a", "x", 0, 4.0), ("a", "y", 1, 4.0), ("a", "z", 2, 4.0), ("a", "w", 3, 4.0), ("a", "x", 4, 5.0)]
    assert relevant_items(evaluation_split(timeline(rows))) == {}


def test_implicit_positives_by_event_type():
    frame = pd.DataFrame({C.EVENT_TYPE: [C.VIEW, C.CLICK, C.ADD_TO_CART, C.PURCHASE], C.RATING: [float("nan")] * 4})
    assert is_positive(frame).tolist() == [False, True, True, True]


def test_conversions_are_carts_and_purchases_not_seen_before():
    # u: views on days 0-7, then (test) a click on q and a purchase of s; v: views of a-d, then (test) buys a again
    u = [("u", item, day, C.VIEW) for day, item in enumerate(["p", "x1", "x2", "x3", "x4", "x5", "x6", "r"])]
    u += [("u", "q", 8, C.CLICK), ("u", "s", 9, C.PURCHASE)]
    v = [("v", item, day, C.VIEW) for day, item in enumerate("abcd")] + [("v", "a", 4, C.PURCHASE)]
    rows = u + v
    frame = timeline([(user, item, day, float("nan")) for user, item, day, _ in rows])
    split = evaluation_split(frame.assign(**{C.EVENT_TYPE: [event for *_, event in rows]}))
    assert relevant_items(split) == {"u": {"q", "s"}}
    assert relevant_items(split, C.CONVERSION_EVENTS) == {"u": {"s"}}  # v's purchase was seen in train


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_fraction_must_be_a_proper_share(fraction: float):
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_by_user_time(timeline(ROWS), fraction)


def pairs(users: list[str], items: list[str]) -> pd.DataFrame:
    return pd.DataFrame({C.USER_ID: users, C.ITEM_ID: items})


def test_pairs_seen_in_matches_each_pair_not_its_parts():
    history = pairs(["a", "a", "b", "z"], ["x", "y", "x", "w"])
    rows = pairs(["a", "b", "b", "c", "a", "z"], ["x", "y", "x", "x", "w", "w"])
    # (b, y): both seen, never together; (c, x): unknown user; (a, w): w seen only with z
    assert pairs_seen_in(history, rows).tolist() == [True, False, True, False, False, True]
    assert pairs_seen_in(history.iloc[:0], rows).tolist() == [False] * 6
    assert pairs_seen_in(history, rows.iloc[:0]).tolist() == []


def test_pairs_seen_in_equals_a_set_of_tuples_on_random_logs():
    rng = np.random.default_rng(3)
    history = pairs([f"u{u}" for u in rng.integers(0, 40, 3000)], [f"i{i}" for i in rng.integers(0, 300, 3000)])
    rows = pairs([f"u{u}" for u in rng.integers(0, 50, 800)], [f"i{i}" for i in rng.integers(0, 350, 800)])
    seen = set(zip(history[C.USER_ID], history[C.ITEM_ID], strict=True))
    expected = [(u, i) in seen for u, i in zip(rows[C.USER_ID], rows[C.ITEM_ID], strict=True)]
    assert pairs_seen_in(history, rows).tolist() == expected
    assert 0 < sum(expected) < len(expected)
