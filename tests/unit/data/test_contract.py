"""Every rule of the data contract, each with a table that breaks exactly that rule."""

from __future__ import annotations

import gc
import weakref

import pandas as pd
import pytest

from models.data import columns as C
from models.data.contract import DataValidationError, validate_dataset

NOW = pd.Timestamp("2026-01-01", tz="UTC")


def items(**overrides: list) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            C.ITEM_ID: ["a", "b", "c"],
            C.TITLE: ["Alpha", "Beta", "Gamma"],
            C.CATEGORY: ["x", "x", "y"],
            C.CREATED_AT: ["2025-01-01", "2025-02-01", "2025-03-01"],
            C.PRICE: [1.0, 2.5, 10.0],
            C.IN_STOCK: [True, False, True],
        }
    )
    for column, values in overrides.items():
        frame[column] = values
    return frame


def users(**overrides: list) -> pd.DataFrame:
    frame = pd.DataFrame({C.USER_ID: ["u1", "u2"], C.SEGMENT: ["s", "t"]})
    for column, values in overrides.items():
        frame[column] = values
    return frame


def interactions(**overrides: list) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            C.USER_ID: ["u1", "u1", "u2"],
            C.ITEM_ID: ["a", "b", "c"],
            C.TIMESTAMP: ["2025-06-01T10:00:00Z", "2025-06-02T10:00:00Z", "2025-06-03T10:00:00Z"],
            C.EVENT_TYPE: [C.VIEW, C.PURCHASE, C.CLICK],
        }
    )
    for column, values in overrides.items():
        frame[column] = values
    return frame


def validate(items_frame=None, inter_frame=None, users_frame=None, with_users: bool = True):
    return validate_dataset(
        "t",
        items_frame if items_frame is not None else items(),
        inter_frame if inter_frame is not None else interactions(),
        users=(users_frame if users_frame is not None else users()) if with_users else None,
        sources={"items": "items.csv", "users": "users.csv", "interactions": "interactions.csv"},
        now=NOW,
    )


def single_issue(**kwargs) -> str:
    with pytest.raises(DataValidationError) as raised:
        validate(**kwargs)
    assert len(raised.value.issues) == 1, raised.value
    return str(raised.value.issues[0])


def test_valid_dataset_gets_contract_dtypes():
    dataset = validate()
    assert dataset.items[C.CREATED_AT].dtype == "datetime64[ns, UTC]"
    assert dataset.interactions[C.TIMESTAMP].dtype == "datetime64[ns, UTC]"
    assert dataset.items[C.PRICE].tolist() == [1.0, 2.5, 10.0]
    assert dataset.items[C.IN_STOCK].tolist() == [True, False, True]
    assert dataset.interactions[C.WEIGHT].tolist() == [1.0, 5.0, 2.0]
    assert dataset.users[C.SEGMENT].tolist() == ["s", "t"]


def test_catalog_keeps_items_and_users_and_drops_the_events():
    dataset = validate()
    catalog = dataset.catalog()
    assert catalog.interactions.empty and list(catalog.interactions.columns) == list(dataset.interactions.columns)
    assert catalog.items is dataset.items and catalog.users is dataset.users and catalog.name == dataset.name
    assert len(dataset.interactions) == 3  # the dataset itself is unchanged


def test_catalog_does_not_keep_the_event_arrays_alive():
    dataset = validate()
    weights = dataset.interactions[C.WEIGHT].to_numpy()
    while weights.base is not None:  # the array pandas stores the column in
        weights = weights.base
    stored = weakref.ref(weights)
    catalog = dataset.catalog()
    del dataset, weights
    gc.collect()
    assert stored() is None, "the catalogue's empty event frame is a view that keeps the whole log in memory"
    assert catalog.interactions.empty


def test_optional_columns_get_defaults():
    frame = items().drop(columns=[C.PRICE, C.IN_STOCK])
    dataset = validate(items_frame=frame)
    assert dataset.items[C.PRICE].isna().all()
    assert dataset.items[C.IN_STOCK].all()
    assert (dataset.items[C.DESCRIPTION] == "").all()


def test_users_derived_from_interactions_when_absent():
    dataset = validate(with_users=False)
    assert dataset.users[C.USER_ID].tolist() == ["u1", "u2"]


def test_ratings_give_weights_and_event_type():
    frame = interactions().drop(columns=[C.EVENT_TYPE])
    frame[C.RATING] = [4.0, 2.5, 5.0]
    dataset = validate(inter_frame=frame)
    assert dataset.interactions[C.EVENT_TYPE].tolist() == [C.RATED] * 3
    assert dataset.interactions[C.WEIGHT].tolist() == [4.0, 2.5, 5.0]


def test_integer_ids_become_text():
    dataset = validate(
        items_frame=items(**{C.ITEM_ID: [1, 2, 3]}),
        inter_frame=interactions(**{C.ITEM_ID: [1.0, 2.0, 3.0]}),
    )
    assert dataset.items[C.ITEM_ID].tolist() == ["1", "2", "3"]
    assert dataset.interactions[C.ITEM_ID].tolist() == ["1", "2", "3"]


def test_missing_column_is_named_with_the_file():
    message = single_issue(items_frame=items().drop(columns=[C.CATEGORY]))
    assert message.startswith("items.csv: column 'category': missing required column")


def test_interactions_need_a_signal_column():
    message = single_issue(inter_frame=interactions().drop(columns=[C.EVENT_TYPE]))
    assert "interactions.csv" in message and "needs at least one of the columns" in message


def test_wrong_type_price():
    message = single_issue(items_frame=items(**{C.PRICE: [1.0, "cheap", 3.0]}))
    assert "column 'price'" in message and "wrong type" in message and "rows [1]" in message and "'cheap'" in message


def test_wrong_type_stock_flag():
    message = single_issue(items_frame=items(**{C.IN_STOCK: ["yes", "maybe", "no"]}))
    assert "column 'in_stock'" in message and "wrong type" in message and "rows [1]" in message


def test_wrong_type_rating():
    message = single_issue(inter_frame=interactions(**{C.RATING: [4.0, "five", 3.0]}))
    assert "column 'rating'" in message and "rows [1]" in message


def test_duplicate_item_ids():
    message = single_issue(
        items_frame=items(**{C.ITEM_ID: ["a", "b", "a"]}), inter_frame=interactions(**{C.ITEM_ID: ["a", "b", "b"]})
    )
    assert "column 'item_id'" in message and "duplicate" in message and "rows [0, 2]" in message


def test_duplicate_user_ids():
    message = single_issue(
        users_frame=users(**{C.USER_ID: ["u1", "u1"]}), inter_frame=interactions(**{C.USER_ID: ["u1"] * 3})
    )
    assert "users.csv: column 'user_id'" in message and "duplicate" in message


def test_null_keys():
    with pytest.raises(DataValidationError) as raised:
        validate(inter_frame=interactions(**{C.USER_ID: ["u1", None, "u2"]}))
    messages = [str(issue) for issue in raised.value.issues]
    assert any("interactions.csv: column 'user_id': 1 null key(s) at rows [1]" in m for m in messages)


def test_unparseable_timestamp():
    message = single_issue(inter_frame=interactions(**{C.TIMESTAMP: ["2025-06-01", "not a date", "2025-06-03"]}))
    assert "column 'timestamp'" in message and "unparseable" in message and "rows [1]" in message


def test_unix_seconds_reach_pandas_without_missing_values(monkeypatch):
    """pandas 2.3 rounds uninitialised memory for each missing float second and can overflow on it (a flaky
    FloatingPointError on CI): the contract must convert only the numbers that are there."""
    real_to_datetime = pd.to_datetime
    seen_with_unit: list[int] = []

    def refuse_missing_seconds(values, *args, **kwargs):
        if kwargs.get("unit") is not None:
            assert not pd.isna(values).any(), "missing values passed to pd.to_datetime(unit=...)"
            seen_with_unit.append(len(values))
        return real_to_datetime(values, *args, **kwargs)

    monkeypatch.setattr(pd, "to_datetime", refuse_missing_seconds)
    message = single_issue(inter_frame=interactions(**{C.TIMESTAMP: ["2025-06-01", "not a date", "1748779200"]}))
    assert "column 'timestamp'" in message and "unparseable" in message and "rows [1]" in message
    message = single_issue(inter_frame=interactions(**{C.TIMESTAMP: [1748692800.5, None, 1748779200]}))
    assert "1 null timestamp(s) at rows [1]" in message and seen_with_unit


def test_future_timestamp():
    message = single_issue(items_frame=items(**{C.CREATED_AT: ["2025-01-01", "2030-01-01", "2025-03-01"]}))
    assert "column 'created_at'" in message and "future" in message and "rows [1]" in message


def test_unix_seconds_are_timestamps():
    dataset = validate(inter_frame=interactions(**{C.TIMESTAMP: [1_700_000_000, 1_700_000_100, 1_700_000_200]}))
    assert dataset.interactions[C.TIMESTAMP].iloc[0] == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")


def test_negative_price():
    message = single_issue(items_frame=items(**{C.PRICE: [1.0, -2.0, 3.0]}))
    assert "column 'price'" in message and "negative" in message and "rows [1]" in message


def test_unknown_item_reference():
    message = single_issue(inter_frame=interactions(**{C.ITEM_ID: ["a", "zzz", "c"]}))
    assert "interactions.csv: column 'item_id'" in message and "not in items.csv" in message and "'zzz'" in message


def test_unknown_user_reference():
    message = single_issue(inter_frame=interactions(**{C.USER_ID: ["u1", "u9", "u2"]}))
    assert "column 'user_id'" in message and "not in users.csv" in message and "rows [1]" in message


def test_unknown_event_type():
    message = single_issue(inter_frame=interactions(**{C.EVENT_TYPE: ["view", "like", "click"]}))
    assert "column 'event_type'" in message and "unknown value" in message and "'like'" in message


def test_all_problems_reported_at_once():
    with pytest.raises(DataValidationError) as raised:
        validate(
            items_frame=items(**{C.PRICE: [-1.0, 2.0, 3.0]}),
            inter_frame=interactions(**{C.TIMESTAMP: ["bad", "2025-06-02", "2025-06-03"]}),
        )
    assert len(raised.value.issues) == 2
    assert "2 problem(s)" in str(raised.value)


def test_a_stock_flag_alone_means_out_of_stock_from_the_data_end_on():
    dataset = validate()
    stockout = dataset.items.set_index(C.ITEM_ID)[C.STOCKOUT_AT]
    assert stockout["b"] == pd.Timestamp("2025-06-03T10:00:00Z")  # the last event: the past is not filtered
    assert stockout[["a", "c"]].isna().all()


def test_stock_times_give_the_flag_at_the_data_end():
    frame = items(**{C.STOCKOUT_AT: ["2025-05-01", None, "2025-05-01"], C.RESTOCK_AT: [None, None, "2025-05-10"]})
    dataset = validate(items_frame=frame.drop(columns=[C.IN_STOCK]))
    assert dataset.items[C.IN_STOCK].tolist() == [False, True, True]


def test_restock_before_its_stockout():
    message = single_issue(items_frame=items(**{C.STOCKOUT_AT: ["2025-05-02", None, None],
                                                C.RESTOCK_AT: ["2025-05-01", None, None],
                                                C.IN_STOCK: [True, True, True]}))  # fmt: skip
    assert "column 'restock_at'" in message and "before the stock-out" in message and "rows [0]" in message


def test_stock_flag_disagreeing_with_stock_times():
    message = single_issue(items_frame=items(**{C.STOCKOUT_AT: [None, None, "2025-05-01"]}))
    assert "column 'in_stock'" in message and "disagree" in message and "rows [1, 2]" in message


def test_times_finer_than_a_microsecond_are_floored_to_it():
    """Float seconds from the live log carry nanoseconds that Parquet and the feature store cannot cast."""
    frame = interactions()
    frame[C.TIMESTAMP] = [1_748_772_068.806483746, 1_748_772_069.0, 1_748_772_070.5]  # 2025-06-01
    stamps = validate(inter_frame=frame).interactions[C.TIMESTAMP]
    assert (stamps.dt.nanosecond == 0).all()
    assert stamps.iloc[0] == pd.Timestamp("2025-06-01T10:01:08.806483Z")
