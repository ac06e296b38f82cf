"""The service class in-process (``RecSys()`` on the published demo version): what a recommendation holds, the
fallback for unknown users, explanations, request filters, seen items, the list length, and the background reload
of the runtime underneath."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bentoml.exceptions import NotFound

from models.recommender.versions import CURRENT, MANIFEST
from serving.runtime import Runtime
from serving.service import Recommendations, RequestFilters
from tests.serving.support import copy_serving_state, publish_copy

UNKNOWN_USER = "no-such-user"


def ids(result: Recommendations) -> list[str]:
    return [item.item_id for item in result.items]


def eligible(items: pd.DataFrame, filters: RequestFilters, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Items passing the request's hard filters (stock defaults to the service's rule: in stock only)."""
    mask = pd.Series(True, index=items.index)
    if filters.in_stock_only is not False:
        mask &= items["item_in_stock"] > 0.5
    if filters.categories:
        mask &= items["item_category"].isin(filters.categories)
    if filters.max_price is not None:
        mask &= ~(items["item_price"] > filters.max_price)
    mask &= ~items.index.isin(list(exclude))
    return items[mask]


def assert_respects(result: Recommendations, items: pd.DataFrame, filters: RequestFilters) -> None:
    chosen = items.loc[ids(result)]
    if filters.in_stock_only is not False:
        assert (chosen["item_in_stock"] > 0.5).all(), chosen[chosen["item_in_stock"] <= 0.5]
    if filters.categories:
        assert chosen["item_category"].isin(filters.categories).all(), chosen["item_category"].tolist()
    if filters.max_price is not None:
        assert (chosen["item_price"] <= filters.max_price).all(), chosen["item_price"].tolist()


def test_service_serves_the_published_version_from_the_environment(service, version):
    assert service.settings.state_dir == version.settings.state_dir
    assert service.runtime.loaded.path == version.version_dir
    assert service.__is_ready__()
    assert service.version() == {
        "namespace": "demo",
        "version": version.version,
        "challenger": None,
        "last_reload_error": None,
    }


@pytest.mark.parametrize("k", [1, 10, 37])
def test_known_user_gets_k_ranked_items_of_the_version(service, version, items, known_users, k):
    for user in list(known_users)[:3]:
        result = service.recommend(user_id=user, k=k)
        assert result.version == version.version
        assert not result.fallback and not result.degraded
        assert len(result.items) == k
        assert len(set(ids(result))) == k
        assert set(ids(result)) <= set(items.index)
        assert all(np.isfinite(item.score) for item in result.items)
        assert all(item.explanation is None for item in result.items)  # only on request
        assert {"user_features", "retrieval", "features", "model", "rules"} <= set(result.timings_ms)


def test_unknown_user_falls_back_to_popular_and_fresh_items(service, version, known_users):
    result = service.recommend(user_id=UNKNOWN_USER, k=10)
    assert result.fallback and not result.degraded
    assert result.version == version.version
    assert len(set(ids(result))) == 10
    assert "model" not in result.timings_ms  # the ranker needs user features: the fallback does not call it
    known = service.recommend(user_id=next(iter(known_users)), k=10)
    assert not known.fallback and ids(known) != ids(result)


def test_explain_gives_sources_top_features_and_rules(service, version, known_users):
    feature_names = set(version.manifest["ranker"]["feature_names"])
    result = service.recommend(user_id=next(iter(known_users)), k=10, explain=True)
    assert len(result.items) == 10
    with_features = 0
    for item in result.items:
        explanation = item.explanation
        assert explanation is not None
        assert explanation["fallback"] is False and explanation["degraded"] is False
        assert {"filtered_out", "category_capped"} <= set(explanation["rules"])
        sources = explanation["sources"]
        assert sources and all({"rank", "score"} <= set(entry) for entry in sources.values())
        if "top_features" in explanation:
            with_features += 1
            top = explanation["top_features"]
            assert 1 <= len(top) <= 5 and set(top) <= feature_names
            assert all(isinstance(value, float) for value in top.values())
    assert with_features >= 5, "ranked items carry the ranker's feature contributions"
    fallback = service.recommend(user_id=UNKNOWN_USER, k=5, explain=True)
    assert all(item.explanation["fallback"] is True for item in fallback.items)
    assert all("top_features" not in item.explanation for item in fallback.items)


def filter_cases(items: pd.DataFrame) -> dict[str, RequestFilters]:
    in_stock = items[items["item_in_stock"] > 0.5]
    common = in_stock["item_category"].value_counts().index[:2].tolist()
    cheap = float(items["item_price"].quantile(0.25))
    return {
        "max_price": RequestFilters(max_price=cheap),
        "categories": RequestFilters(categories=common),
        "in_stock_only": RequestFilters(in_stock_only=True),
        "out_of_stock_allowed": RequestFilters(in_stock_only=False),
        "combined": RequestFilters(
            categories=common, max_price=float(items["item_price"].median()), in_stock_only=True
        ),
    }


@pytest.mark.parametrize("case", ["max_price", "categories", "in_stock_only", "out_of_stock_allowed", "combined"])
@pytest.mark.parametrize("who", ["known", "unknown"])
def test_filters_are_respected(service, items, known_users, case, who):
    filters = filter_cases(items)[case]
    user = next(iter(known_users)) if who == "known" else UNKNOWN_USER
    seen = known_users.get(user, [])
    k = 20
    result = service.recommend(user_id=user, k=k, filters=filters)
    assert_respects(result, items, filters)
    assert len(result.items) == min(k, len(eligible(items, filters, seen)))


def test_default_stock_rule_leaves_out_of_stock_items(service, items, known_users):
    out_of_stock = set(items.index[items["item_in_stock"] <= 0.5])
    assert out_of_stock, "the demo catalogue has out-of-stock items"
    for user in [*list(known_users)[:5], UNKNOWN_USER]:
        assert not set(ids(service.recommend(user_id=user, k=50))) & out_of_stock


def test_exclude_seen_never_returns_seen_items(service, known_users):
    repeats = 0
    for user, seen in list(known_users.items())[:10]:
        assert seen, f"{user} has no seen items in the online store"
        assert not set(ids(service.recommend(user_id=user, k=50, exclude_seen=True))) & set(seen)
        assert not set(ids(service.recommend(user_id=user, k=50))) & set(seen)  # the default
        repeats += len(set(ids(service.recommend(user_id=user, k=50, exclude_seen=False))) & set(seen))
    assert repeats > 0, "with exclude_seen=false seen items do come back: the check above can fail"


def small_category(items: pd.DataFrame, least: int) -> str:
    """The category with the fewest in-stock items, among those with at least ``least``."""
    counts = items[items["item_in_stock"] > 0.5]["item_category"].value_counts()
    return str(counts[counts >= least].index[-1])


@pytest.mark.parametrize("who", ["known", "unknown"])
def test_restrictive_filters_still_fill_the_list_to_k(service, items, known_users, who):
    user = next(iter(known_users)) if who == "known" else UNKNOWN_USER
    seen = known_users.get(user, [])
    filters = RequestFilters(categories=[small_category(items, 30)])
    available = eligible(items, filters, seen)
    k = len(available)  # every eligible item of the category, most of them beyond stage 1's candidates
    assert k >= 15
    result = service.recommend(user_id=user, k=k, filters=filters)
    assert len(result.items) == k
    assert set(ids(result)) == set(available.index)
    more = service.recommend(user_id=user, k=k + 10, filters=filters)  # asking for more than exist
    assert set(ids(more)) == set(available.index)
    cheap = RequestFilters(max_price=float(items["item_price"].nsmallest(30).iloc[-1]))
    result = service.recommend(user_id=user, k=15, filters=cheap)
    assert_respects(result, items, cheap)
    assert len(result.items) == min(15, len(eligible(items, cheap, seen)))


def test_similar_and_search_in_process(service, version, items):
    item = str(items.index[0])
    similar = service.similar(item_id=item, k=10)
    assert similar.version == version.version and len(similar.items) == 10 and item not in ids(similar)
    with pytest.raises(NotFound, match="nope"):
        service.similar(item_id="nope", k=5)
    category = str(items.loc[item, "item_category"])
    found = service.search(query=f"{category}", k=10, filters=RequestFilters(categories=[category]))
    assert found.version == version.version and len(found.items) == 10
    assert set(items.loc[ids(found), "item_category"]) == {category}


def test_runtime_picks_up_published_versions_in_the_background(version, tmp_path: Path):
    settings = copy_serving_state(version.settings, tmp_path / "state")
    runtime = Runtime(settings)
    runtime.start(load_encoder=False)
    assert runtime.status() == {
        "namespace": "demo",
        "version": version.version,
        "challenger": None,
        "last_reload_error": None,
    }
    runtime.watch(0.2)  # the watcher thread has no stop: the test leaves ``current`` on a good version
    new = publish_copy(settings.versions_dir)
    assert wait_for(lambda: runtime.status()["version"] == new.name), runtime.status()
    bad = publish_copy(settings.versions_dir)
    (bad / MANIFEST).write_text("{ not json")
    try:
        assert wait_for(lambda: runtime.last_reload_error is not None), runtime.status()
        error = str(runtime.last_reload_error)
        assert bad.name in error and "not valid JSON" in error
        assert runtime.status()["version"] == new.name  # still serving the last good version
        loaded, result = runtime.recommend(UNKNOWN_USER, 5, RequestFilters().to_filters(), True, False)
        assert loaded.version == new.name and len(result.items) == 5
    finally:
        pointer = settings.versions_dir / ".current-rollback"
        pointer.symlink_to(new.name)
        pointer.replace(settings.versions_dir / CURRENT)


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()
