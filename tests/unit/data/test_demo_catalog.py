"""The demo catalog: deterministic, the requested shape, and carrying the signals the re-ranker should learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.data import columns as C
from models.data import demo_catalog
from models.data.clock import unix_seconds, unix_seconds_or_nan
from models.data.contract import in_stock_at
from models.data.demo_catalog import DEMO_END, generate_demo_catalog


@pytest.fixture(scope="module")
def demo():
    return generate_demo_catalog(n_items=3_000, n_users=800, n_interactions=40_000, seed=7)


def test_same_seed_same_tables(demo):
    again = generate_demo_catalog(n_items=3_000, n_users=800, n_interactions=40_000, seed=7)
    pd.testing.assert_frame_equal(demo.items, again.items)
    pd.testing.assert_frame_equal(demo.users, again.users)
    pd.testing.assert_frame_equal(demo.interactions, again.interactions)


def test_other_seed_other_tables(demo):
    other = generate_demo_catalog(n_items=3_000, n_users=800, n_interactions=40_000, seed=8)
    assert not demo.items[C.TITLE].equals(other.items[C.TITLE])


def test_shape(demo):
    assert len(demo.items) == 3_000 and len(demo.users) == 800
    assert abs(len(demo.interactions) - 40_000) < 2_000
    assert demo.items[C.CATEGORY].nunique() >= 20
    assert demo.interactions[C.TIMESTAMP].max() <= DEMO_END
    assert demo.items[C.PRICE].gt(0).all()
    assert 0.85 < demo.items[C.IN_STOCK].mean() < 0.97
    assert 0.10 < demo.items[C.STOCKOUT_AT].notna().mean() < 0.20
    assert demo.items[C.CREATED_AT].max() - demo.items[C.CREATED_AT].min() > pd.Timedelta(days=600)
    assert {C.SEGMENT, C.DEVICE, C.AGE_BAND} <= set(demo.users.columns)


def test_funnel_narrows(demo):
    counts = demo.interactions[C.EVENT_TYPE].value_counts()
    assert counts[C.VIEW] > counts[C.CLICK] > counts[C.ADD_TO_CART] > counts[C.PURCHASE] > 0


def test_text_carries_the_category(demo):
    # every description names its category's range, so text embeddings can separate categories
    named = [cat in desc for cat, desc in zip(demo.items[C.CATEGORY], demo.items[C.DESCRIPTION], strict=True)]
    assert all(named)


def test_prices_differ_by_category(demo):
    medians = demo.items.groupby(C.CATEGORY)[C.PRICE].median()
    assert medians.max() / medians.min() > 10


def test_premium_users_buy_pricier_items_than_bargain_hunters(demo):
    items = demo.items.set_index(C.ITEM_ID)
    relative = items[C.PRICE] / items.groupby(C.CATEGORY)[C.PRICE].transform("median")
    buys = demo.interactions[demo.interactions[C.EVENT_TYPE] == C.PURCHASE]
    buys = buys.merge(demo.users[[C.USER_ID, C.SEGMENT]], on=C.USER_ID)
    buys["relative_price"] = buys[C.ITEM_ID].map(relative)
    by_segment = buys.groupby(C.SEGMENT)["relative_price"].median()
    assert by_segment["premium"] > 1.3 * by_segment["bargain_hunter"]


def test_new_items_draw_attention(demo):
    items = demo.items.set_index(C.ITEM_ID)
    views = demo.interactions[demo.interactions[C.EVENT_TYPE] == C.VIEW]
    created = items.loc[views[C.ITEM_ID], C.CREATED_AT].to_numpy()
    age_days = (views[C.TIMESTAMP].to_numpy() - created) / pd.Timedelta(days=1)
    assert (age_days >= 0).all()  # nobody views an item before it exists
    # an item gets far more views in its first month than in its seventh
    assert (age_days < 30).mean() > 2 * ((age_days >= 180) & (age_days < 210)).mean()


def test_nothing_is_bought_while_out_of_stock_and_stock_is_a_point_in_time_fact(demo):
    items = demo.items.set_index(C.ITEM_ID)
    inter = demo.interactions
    seconds = unix_seconds(inter[C.TIMESTAMP])
    stockout = unix_seconds_or_nan(items[C.STOCKOUT_AT]).astype(float)
    restock = unix_seconds_or_nan(items[C.RESTOCK_AT]).astype(float)
    rows = items.index.get_indexer(inter[C.ITEM_ID])
    in_stock = in_stock_at(stockout[rows], restock[rows], seconds)
    bought = (inter[C.EVENT_TYPE] == C.PURCHASE).to_numpy()
    views = (inter[C.EVENT_TYPE] == C.VIEW).to_numpy()
    assert views[~in_stock].sum() > 50  # out-of-stock items are still viewed
    # a purchase lands at most a few minutes after the view that led to it (the funnel's delays)
    assert bought[~in_stock].sum() <= 0.01 * bought.sum()
    # the flag is the state at the end: items out of stock then were in stock before their stock-out
    assert (items[C.IN_STOCK] == in_stock_at(stockout, restock, DEMO_END.value / 1e9)).all()
    assert items[C.RESTOCK_AT].notna().sum() > 0 and (~items[C.IN_STOCK]).sum() > 0


def test_scoring_in_blocks_leaves_the_tables_as_they_are(monkeypatch):
    """Memory is bounded by scoring views in blocks; the random draws run in the same order, so the tables do not
    depend on the block size."""
    whole = generate_demo_catalog(n_items=600, n_users=150, n_interactions=6000, seed=3)
    monkeypatch.setattr(demo_catalog, "CELLS_PER_BLOCK", 50)
    blocked = generate_demo_catalog(n_items=600, n_users=150, n_interactions=6000, seed=3)
    pd.testing.assert_frame_equal(whole.interactions, blocked.interactions)


def test_views_on_shelves_larger_than_a_glance_pick_launched_items_from_random_pages(monkeypatch):
    monkeypatch.setattr(demo_catalog, "SHELF_GLANCE", 4)  # every shelf of 600 items is larger than this
    world = demo_catalog.generate_demo_world(n_items=600, n_users=150, n_interactions=6000, seed=3)
    views = world.dataset.interactions
    views = views[views[C.EVENT_TYPE] == C.VIEW]
    items = world.dataset.items.set_index(C.ITEM_ID)
    assert len(views) > 3000 and views[C.ITEM_ID].nunique() > 300  # each view glances at its own random page
    launched = items.loc[views[C.ITEM_ID], C.CREATED_AT].to_numpy() <= views[C.TIMESTAMP].to_numpy()
    assert launched.all()


def test_a_softmax_draw_picks_as_the_gumbel_max_trick_does():
    rng = np.random.default_rng(5)
    utility = np.tile([0.0, 1.0, 2.0, -np.inf, 0.5], (40_000, 1))
    utility[:10] = -np.inf  # nothing launched yet on these views
    expected = np.exp(utility[-1]) / np.exp(utility[-1]).sum()
    for draw in (demo_catalog._gumbel_max, demo_catalog._softmax_draw):
        picked = draw(rng, utility)
        assert (picked[:10] == -1).all() and (picked[10:] >= 0).all()
        np.testing.assert_allclose(np.bincount(picked[10:], minlength=5) / len(picked[10:]), expected, atol=0.01)
