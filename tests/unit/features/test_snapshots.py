"""Feature computation on hand-built timelines: windows, strict point-in-time cut, price and taste profiles,
and the assembled matrix's column order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.data import columns as C
from models.features.assembly import ItemBlock, RequestInputs, UserRow, assemble
from models.features.snapshots import FeatureContext, item_snapshots, user_snapshots
from models.features.spec import ITEM_NUMERIC, MODEL_FEATURES, USER_NUMERIC, FeatureSpec

DAY0 = pd.Timestamp("2025-01-01", tz="UTC")


def day(n: float) -> pd.Timestamp:
    return DAY0 + pd.Timedelta(days=n)


@pytest.fixture
def context() -> FeatureContext:
    items = pd.DataFrame(
        {
            C.ITEM_ID: ["a", "b", "c", "d"],
            C.TITLE: ["A", "B", "C", "D"],
            C.CATEGORY: ["shoes", "shoes", "books", "books"],
            C.CREATED_AT: [day(-100), day(-50), day(-10), day(5)],
            C.PRICE: [100.0, 50.0, 10.0, 30.0],
            C.STOCKOUT_AT: [pd.NaT, day(1), day(5), pd.NaT],
            C.RESTOCK_AT: [pd.NaT, day(3), pd.NaT, pd.NaT],
        }
    )
    users = pd.DataFrame(
        {C.USER_ID: ["u", "v"], C.SEGMENT: ["premium", "bargain_hunter"], C.DEVICE: ["mobile", "desktop"]}
    )
    rows = [
        ("u", "a", day(0), C.VIEW, 1.0),
        ("u", "a", day(0.01), C.PURCHASE, 5.0),
        ("u", "c", day(8), C.CLICK, 2.0),
        ("v", "a", day(9), C.VIEW, 1.0),
        ("v", "b", day(9.5), C.VIEW, 1.0),
        ("u", "b", day(10), C.VIEW, 1.0),  # exactly at the snapshot time below: must not count
    ]
    interactions = pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, C.TIMESTAMP, C.EVENT_TYPE, C.WEIGHT])
    interactions[C.RATING] = np.nan
    return FeatureContext(items, users, interactions)


def test_item_windows_count_strictly_before_the_snapshot(context):
    frame = item_snapshots(context, ["a", "b", "c"], [day(10)] * 3).set_index(C.ITEM_ID)
    assert frame.loc["a", "item_events_all"] == 3  # u view, u purchase, v view
    assert frame.loc["a", "item_events_7d"] == 1  # only v's view on day 9
    assert frame.loc["a", "item_events_1d"] == 1
    assert frame.loc["b", "item_events_all"] == 1  # the view at exactly day 10 is not before day 10
    assert frame.loc["a", "item_positives_all"] == 1  # the purchase
    assert frame.loc["a", "item_mean_weight"] == pytest.approx((1 + 5 + 1) / 3)
    assert frame.loc["a", "item_positive_rate"] == pytest.approx((1 + 1) / (3 + 4))
    assert frame.loc["c", "item_in_stock"] == 0.0  # out since day 5
    assert frame.loc["b", "item_in_stock"] == 1.0  # out on days 1-3, restocked
    # price tier: percentile within the category
    assert frame.loc["a", "item_price_tier"] == 1.0 and frame.loc["b", "item_price_tier"] == 0.5
    assert list(frame.columns[1:-1]) == list(ITEM_NUMERIC)


def test_stock_is_known_as_of_each_time(context):
    at = [day(0.5), day(2), day(4), day(6)]
    frame = item_snapshots(context, ["b", "c", "b", "c"], at)
    assert frame["item_in_stock"].tolist() == [1.0, 1.0, 1.0, 0.0]
    b_during = item_snapshots(context, ["b"], [day(2)])
    assert b_during["item_in_stock"].tolist() == [0.0]


def test_user_profile(context):
    frame = user_snapshots(context, ["u", "v", "stranger"], [day(10)] * 3).set_index(C.USER_ID)
    u = frame.loc["u"]
    # the user's own view of b at exactly the snapshot time counts (the user log holds only their history)
    assert u["user_events_all"] == 4 and u["user_positives_all"] == 2  # purchase and click
    assert u["user_days_since_last"] == pytest.approx(0.0) and u["user_span_days"] == pytest.approx(10.0)
    assert u["user_distinct_items"] == 3
    assert u["user_top_categories"] == ["shoes", "books"]
    assert u["user_top_category_shares"] == pytest.approx([3 / 4, 1 / 4])
    assert u["user_top_tags"] == ["shoes", "books"]  # no tags column: the category is the item's one tag
    assert u["user_recent_items"] == ["a", "c"]  # positives, oldest first
    assert u["user_seen_items"] == ["b", "c", "a"]  # most recent first, unique
    assert u["user_log_price_mean"] == pytest.approx(np.mean(np.log1p([100.0, 100.0, 10.0, 50.0])))
    # how popular an item was when the user met it: a had no earlier event, then one; c none; b one (v's view)
    assert u["user_mean_item_popularity"] == pytest.approx(np.mean(np.log1p([0, 1, 0, 1])))
    assert u["global_events_30d"] == 5  # everybody's events strictly before day 10
    assert u["user_segment"] == "premium" and u["user_device"] == "mobile" and u["user_age_band"] == "unknown"
    assert frame.loc["v", "user_positives_all"] == 0
    assert frame.loc["v", "user_recent_items"] == ["a", "b"]  # no positive yet: all interactions
    stranger = frame.loc["stranger"]
    assert stranger["user_events_all"] == 0 and stranger["user_recent_items"] == []
    assert np.isnan(stranger["user_log_price_mean"])


def test_snapshot_earlier_in_time_sees_less(context):
    early = user_snapshots(context, ["u"], [day(5)]).iloc[0]
    assert early["user_events_all"] == 2 and early["user_recent_items"] == ["a"]
    assert early["user_days_since_last"] == pytest.approx(4.99)


def test_assembled_matrix_follows_the_contract_order(context):
    spec = FeatureSpec.fit(context.users)
    user = UserRow.from_mapping(user_snapshots(context, ["u"], [day(10)]).iloc[0].to_dict(), spec)
    block = ItemBlock.from_frame(item_snapshots(context, ["a", "c"], [day(10)] * 2))
    inputs = RequestInputs(
        as_of=day(10).value / 1e9,
        candidate_rows=np.array([0, 2]),
        user_text_vector=np.array([1.0, 0.0], np.float32),
        user_collab_vector=None,
        candidate_text_vectors=np.array([[1.0, 0.0], [0.0, 1.0]], np.float32),
        candidate_collab_vectors=np.zeros((2, 3), np.float32),
        seen_counts=np.array([1.0, 0.0], np.float32),
        provenance_ranks={"ials": np.array([0, -1]), "popular_short": np.array([3, 1])},
        provenance_scores={"ials": np.array([0.9, 0.0]), "popular_short": np.array([2.0, 5.0])},
        fused_scores=np.array([0.05, 0.02], np.float32),
        item_tags=context.tags,
        recent_rows=np.array([2]),  # the last item: c, a book
    )
    matrix = assemble(user, block, inputs)
    assert matrix.shape == (2, len(MODEL_FEATURES)) and matrix.dtype == np.float32
    column = {name: i for i, name in enumerate(MODEL_FEATURES)}
    assert matrix[0, column["user_events_all"]] == 4
    assert matrix[:, column["semantic_affinity"]].tolist() == [1.0, 0.0]
    assert np.isnan(matrix[:, column["collaborative_score"]]).all()
    assert matrix[:, column["category_affinity"]] == pytest.approx([3 / 4, 1 / 4])
    assert matrix[:, column["tag_affinity"]] == pytest.approx([3 / 4, 1 / 4])
    assert matrix[:, column["tag_affinity_recent"]].tolist() == [0.0, 1.0]
    assert matrix[:, column["item_age_days"]] == pytest.approx([110.0, 20.0], abs=0.01)
    assert matrix[:, column["s1_ials_rank"]][0] == 0 and np.isnan(matrix[1, column["s1_ials_rank"]])
    assert matrix[:, column["s1_fused_rank"]].tolist() == [0.0, 1.0]
    assert matrix[:, column["s1_fused_score"]] == pytest.approx([0.05, 0.02])
    assert matrix[:, column["n_sources"]].tolist() == [2.0, 1.0]
    assert matrix[0, column["user_segment"]] == spec.vocabularies["user_segment"].index("premium")
    assert "item_category" not in column  # the category enters through the user's affinity to it
    assert np.isnan(matrix[:, column["s1_semantic_rank"]]).all()  # a source that returned nothing
    assert len(USER_NUMERIC) < column["item_events_1d"]


def test_spec_round_trip_and_unknown_values(context):
    spec = FeatureSpec.fit(context.users)
    again = FeatureSpec.from_json(spec.to_json())
    assert again == spec
    assert np.isnan(spec.codes("user_segment", ["never seen"])[0])
    values = [*spec.vocabularies["user_segment"], "never seen", None, float("nan"), 3]
    expected = spec.codes("user_segment", values)
    np.testing.assert_array_equal([spec.code("user_segment", v) for v in values], expected)  # one value's lookup
    with pytest.raises(ValueError, match="feature list differs"):
        FeatureSpec.from_json({**spec.to_json(), "names": ["x"]})


def test_tag_profile_affinity_and_counts_match_the_sparse_algebra():
    from models.features.snapshots import ItemTags

    rng = np.random.default_rng(3)
    names = [f"t{i}" for i in range(40)]
    items = pd.DataFrame({C.CATEGORY: rng.choice(["a", "b", "c"], 500),
                          C.TAGS: ["|".join(rng.choice(names, int(rng.integers(0, 6)))) for _ in range(500)]})  # fmt: skip
    tags = ItemTags.from_items(items)
    profile = tags.profile(["t3", "zzz", "b", "t7"], [0.5, 0.9, 0.3, 0.2])
    expected = np.zeros(len(tags.names), np.float32)
    expected[tags.names.get_indexer(["t3", "b", "t7"])] = [0.5, 0.3, 0.2]
    np.testing.assert_array_equal(profile, expected)
    rows = rng.choice(500, 200)
    dense = tags.matrix.toarray()
    per_item = np.maximum(dense[rows].sum(axis=1), 1)
    np.testing.assert_allclose(tags.affinity(rows, profile), dense[rows] @ profile / per_item, rtol=1e-6)
    np.testing.assert_array_equal(tags.counts(rows[:5]), dense[rows[:5]].sum(axis=0))
    assert tags.affinity(rows[:0], profile).shape == (0,)
