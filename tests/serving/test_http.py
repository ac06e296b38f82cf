"""The service behind its ASGI app (``RecSys.to_asgi()`` with Starlette's TestClient): health, the three request
endpoints, 422 for invalid input naming the field, 404 for an unknown item, the served version in every answer,
hot reload (a new version is taken, a broken one refused while the old one keeps serving) and degraded answers
when the online store is unreachable."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from feast import FeatureStore

from models.features.store import repo_config
from models.recommender.versions import CURRENT, MANIFEST
from tests.serving.support import AsgiService, asgi_service, copy_serving_state, free_port, publish_copy

UNKNOWN_USER = "no-such-user"


def post(api: AsgiService, path: str, body: dict[str, Any] | None = None) -> Any:
    response = api.client.post(path, json=body or {})
    assert response.status_code == 200, f"{path} {body}: {response.status_code} {response.text}"
    return response.json()


def item_ids(answer: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


# ---- health and happy paths ---------------------------------------------------------------------------------
def test_ready_and_alive_after_startup(api, version):
    assert api.client.get("/readyz").status_code == 200
    assert api.client.get("/livez").status_code == 200
    assert api.client.get("/metrics").status_code == 200
    assert post(api, "/version") == {
        "namespace": "demo",
        "version": version.version,
        "challenger": None,
        "last_reload_error": None,
    }


def test_recommend(api, version, known_users):
    user = next(iter(known_users))
    answer = post(api, "/recommend", {"user_id": user, "k": 7, "explain": True})
    assert answer["version"] == version.version
    assert len(answer["request_id"]) == 32
    assert len(set(item_ids(answer))) == 7
    assert answer["fallback"] is False and answer["degraded"] is False
    assert all(item["explanation"]["sources"] for item in answer["items"])
    assert {"user_features", "model", "rules"} <= set(answer["timings_ms"])
    unknown = post(api, "/recommend", {"user_id": UNKNOWN_USER})
    assert unknown["fallback"] is True and len(unknown["items"]) == 10 and unknown["version"] == version.version


def test_recommend_with_session_context_and_filters(api, items, known_users):
    user = next(iter(known_users))
    session = [str(i) for i in items.index[:3]]
    body = {"user_id": user, "k": 10, "context": {"session_item_ids": session}, "filters": {"max_price": 100.0}}
    answer = post(api, "/recommend", body)
    assert len(answer["items"]) == 10
    assert (items.loc[item_ids(answer), "item_price"] <= 100.0).all()


def test_a_session_moves_the_candidates_and_the_list_towards_its_category(api, items, known_users):
    """The session items are the request's newest history. Stage 1 is deterministic: the session sources bring
    candidates of the session's category. What the re-ranker makes of them is a property of the trained model — on
    the suite's tiny model one-ulp feature differences decide whether a category item climbs into the top 20 — so
    the list is only required to change and not to lose the category overall."""

    def category_candidates(body: dict, category: str) -> int:
        stage1 = post(api, "/explore", {**body, "per_source": 50})["stage1"]["sources"]
        found = {c["item_id"] for candidates in stage1.values() for c in candidates}
        return int((items.loc[sorted(found), "item_category"] == category).sum())

    candidate_gains, list_gains = [], []
    for user in list(known_users)[:5]:
        before = item_ids(post(api, "/recommend", {"user_id": user, "k": 20}))
        shown = items.loc[before, "item_category"].value_counts()
        category = next(c for c in items["item_category"].value_counts().index if c not in shown.index[:3])
        session = [str(i) for i in items.index[items["item_category"] == category][:5]]
        with_session = {"user_id": user, "k": 20, "context": {"session_item_ids": session}}
        after = item_ids(post(api, "/recommend", with_session))
        assert after != before
        list_gains.append((items.loc[after, "item_category"] == category).sum() - shown.get(category, 0))
        candidate_gains.append(
            category_candidates(with_session, category) - category_candidates({"user_id": user, "k": 20}, category)
        )
    assert min(candidate_gains) >= 0 and sum(candidate_gains) > 0, candidate_gains
    assert sum(list_gains) >= 0, list_gains


def test_a_session_item_outside_the_catalogue_is_named(api, known_users):
    body = {"user_id": next(iter(known_users)), "context": {"session_item_ids": ["no-such-item"]}}
    response = api.client.post("/recommend", json=body)
    assert response.status_code == 422 and "no-such-item" in response.text


def test_similar(api, version, items):
    item = str(items.index[5])
    answer = post(api, "/similar", {"item_id": item, "k": 8})
    assert answer["version"] == version.version
    assert len(set(item_ids(answer))) == 8 and item not in item_ids(answer)
    assert set(item_ids(answer)) <= set(items.index)
    scores = [entry["score"] for entry in answer["items"]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 2 / 60  # fused reciprocal ranks


def test_similar_unknown_item_is_404(api, version):
    response = api.client.post("/similar", json={"item_id": "no-such-item"})
    assert response.status_code == 404
    assert "no-such-item" in response.text and version.version in response.text


def test_search(api, version, items, known_users):
    answer = post(api, "/search", {"query": "running shoes for trail runs", "k": 6})
    assert answer["version"] == version.version and len(set(item_ids(answer))) == 6
    assert answer["fallback"] is False
    personal = post(api, "/search", {"query": "coffee", "k": 6, "user_id": next(iter(known_users))})
    assert personal["version"] == version.version and len(personal["items"]) == 6
    category = str(items["item_category"].iloc[0])
    filtered = post(api, "/search", {"query": category, "k": 5, "filters": {"categories": [category]}})
    assert set(items.loc[item_ids(filtered), "item_category"]) == {category}


def test_every_answer_names_the_served_version(api, version, items, known_users):
    answers = [
        post(api, "/recommend", {"user_id": next(iter(known_users)), "k": 3}),
        post(api, "/recommend", {"user_id": UNKNOWN_USER, "k": 3}),
        post(api, "/similar", {"item_id": str(items.index[0]), "k": 3}),
        post(api, "/search", {"query": "a gift", "k": 3}),
        post(api, "/version"),
        post(api, "/reload"),
    ]
    assert [answer["version"] for answer in answers] == [version.version] * len(answers)


# ---- invalid input ------------------------------------------------------------------------------------------
INVALID = [
    ("/recommend", {"user_id": "u", "k": 0}, ["k"]),
    ("/recommend", {"user_id": "u", "k": 101}, ["k"]),
    ("/recommend", {"k": 5}, ["user_id"]),
    ("/recommend", {"user_id": ""}, ["user_id"]),
    ("/recommend", {"user_id": "u", "filters": {"max_price": -1}}, ["filters", "max_price"]),
    ("/recommend", {"user_id": 5}, ["user_id"]),
    ("/recommend", {"user_id": "u", "k": "ten"}, ["k"]),
    ("/recommend", {"user_id": "u", "k": 2.5}, ["k"]),
    ("/recommend", {"user_id": "u", "explain": "maybe"}, ["explain"]),
    ("/recommend", {"user_id": "u", "exclude_seen": [True]}, ["exclude_seen"]),
    ("/recommend", {"user_id": "u", "filters": {"categories": "books"}}, ["filters", "categories"]),
    ("/recommend", {"user_id": "u", "filters": {"max_price": "cheap"}}, ["filters", "max_price"]),
    ("/recommend", {"user_id": "u", "context": {"session_item_ids": ["i"] * 51}}, ["context", "session_item_ids"]),
    ("/recommend", {"user_id": "u", "context": {"device": "mobile"}}, ["context", "device"]),
    ("/similar", {"item_id": "i000001", "k": 0}, ["k"]),
    ("/similar", {"k": 3}, ["item_id"]),
    ("/similar", {"item_id": ["i000001"]}, ["item_id"]),
    ("/similar", {"item_id": "i000001", "filters": {"max_price": -0.01}}, ["filters", "max_price"]),
    ("/search", {"query": ""}, ["query"]),
    ("/search", {"query": "x" * 513}, ["query"]),
    ("/search", {"query": "shoes", "k": 101}, ["k"]),
    ("/search", {"query": "shoes", "user_id": 7}, ["user_id"]),
]


@pytest.mark.parametrize(("path", "body", "loc"), INVALID, ids=[f"{p}-{'.'.join(loc)}" for p, _, loc in INVALID])
def test_invalid_input_is_422_naming_the_field(api, path, body, loc):
    response = api.client.post(path, json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert loc in [error["loc"] for error in detail], detail


def test_malformed_json_is_a_client_error(api):
    response = api.client.post("/recommend", content=b'{"user_id": ', headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text


# ---- degraded: the online store is unreachable --------------------------------------------------------------
@pytest.fixture
def unreachable_online_store(api, version) -> Iterator[None]:
    """The served version reads user features from a Redis online store on a closed port, for one test."""
    settings = version.settings.model_copy(update={"online_store": "redis", "redis_url": f"127.0.0.1:{free_port()}"})
    runtime = api.instance.runtime
    loaded = runtime.loaded
    runtime.loaded = dataclasses.replace(loaded, store=FeatureStore(config=repo_config(settings, version.dataset)))
    try:
        yield
    finally:
        runtime.loaded = loaded
        runtime._store_down_until = 0.0  # the store is back: don't wait out the outage pause


def test_unreachable_online_store_degrades_instead_of_failing(
    api, version, items, known_users, unreachable_online_store
):
    """The first request waits out the Redis client's retries; then the runtime pauses store reads for a few
    seconds, so the next requests answer degraded at once."""
    user = next(iter(known_users))
    body = {"user_id": user, "k": 10, "explain": True, "filters": {"max_price": 200.0}}
    answer = post(api, "/recommend", body)
    assert answer["degraded"] is True and answer["fallback"] is False
    assert answer["version"] == version.version and len(set(item_ids(answer))) == 10
    assert "model" not in answer["timings_ms"]  # stage-1 order: no ranker without user features
    assert all(item["explanation"]["degraded"] is True for item in answer["items"])
    assert (items.loc[item_ids(answer), "item_price"] <= 200.0).all()
    started = time.perf_counter()
    searched = post(api, "/search", {"query": "headphones", "k": 5, "user_id": user})
    assert searched["degraded"] is True and len(searched["items"]) == 5
    assert time.perf_counter() - started < 2.0  # no second wait for Redis during the outage
    assert post(api, "/similar", {"item_id": item_ids(answer)[0], "k": 5})["version"] == version.version


def test_online_store_back_means_not_degraded(api, known_users):
    """Runs after the degraded test: the swap was undone and answers are personalised again."""
    answer = post(api, "/recommend", {"user_id": next(iter(known_users)), "k": 5})
    assert answer["degraded"] is False and answer["fallback"] is False


# ---- hot reload ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reloadable(version, tmp_path_factory) -> Iterator[tuple[AsgiService, Path]]:
    """The service on a state folder of its own, which the reload tests publish into: (service, versions dir)."""
    settings = copy_serving_state(version.settings, tmp_path_factory.mktemp("reload-state"))
    with asgi_service(settings.state_dir, metrics=False) as started:  # the shared app (``api``) has the metrics
        yield started, settings.versions_dir


def served(api: AsgiService) -> str:
    return str(post(api, "/version")["version"])


def rollback(versions: Path, name: str) -> None:
    """Point ``current`` at an earlier version folder, as an operator would (one atomic rename)."""
    pointer = versions / f".{CURRENT}-rollback"
    pointer.symlink_to(name)
    pointer.replace(versions / CURRENT)


def publish_good(api: AsgiService, versions: Path) -> Path:
    """Publish a copy of the version being served (``current`` may point at one an earlier test broke)."""
    rollback(versions, served(api))
    return publish_copy(versions)


def test_reload_switches_to_a_newly_published_version(reloadable, known_users):
    api, versions = reloadable
    before = served(api)
    new = publish_good(api, versions)
    assert new.name != before
    assert served(api) == before  # nothing changes until the reload (the background poll is hours away here)
    status = post(api, "/reload")
    assert status == {"namespace": "demo", "version": new.name, "challenger": None, "last_reload_error": None}
    assert served(api) == new.name
    assert post(api, "/recommend", {"user_id": next(iter(known_users)), "k": 5})["version"] == new.name
    assert post(api, "/reload")["version"] == new.name  # reloading the same version is a no-op


def corrupt_checksum(folder: Path) -> str:
    with open(folder / "ranker" / "ranker.txt", "ab") as handle:
        handle.write(b"\n# tampered\n")
    return "checksum mismatch"


def delete_index(folder: Path) -> str:
    (folder / "stage1" / "semantic.faiss").unlink()
    return "missing"


def break_manifest(folder: Path) -> str:
    (folder / MANIFEST).write_text('{"version": ')
    return "not valid JSON"


BREAKAGES = {"checksum": corrupt_checksum, "missing-file": delete_index, "manifest": break_manifest}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_reload_refuses_a_broken_version_and_keeps_serving(reloadable, known_users, items, breakage):
    api, versions = reloadable
    good = publish_good(api, versions)
    assert post(api, "/reload")["version"] == good.name
    bad = publish_copy(versions)
    problem = BREAKAGES[breakage](bad)
    status = post(api, "/reload")
    assert status["version"] == good.name
    error = status["last_reload_error"]
    assert error is not None and bad.name in error and problem in error, error
    assert post(api, "/version") == status
    assert api.client.get("/readyz").status_code == 200
    for answer in (
        post(api, "/recommend", {"user_id": next(iter(known_users)), "k": 5}),
        post(api, "/recommend", {"user_id": UNKNOWN_USER, "k": 5}),
        post(api, "/similar", {"item_id": str(items.index[0]), "k": 5}),
        post(api, "/search", {"query": "books", "k": 5}),
    ):
        assert answer["version"] == good.name and len(answer["items"]) == 5


def test_reload_refuses_an_incomplete_version(reloadable):
    """Checksums fine, but the manifest lacks the ranker: the load checks refuse it."""
    api, versions = reloadable
    before = served(api)
    rollback(versions, before)
    incomplete = publish_copy(versions, sections=["stage1", "features", "k_candidates"])
    status = post(api, "/reload")
    assert status["version"] == before
    assert incomplete.name in status["last_reload_error"] and "ranker" in status["last_reload_error"]


def test_a_good_version_after_a_refused_one_is_taken(reloadable):
    api, versions = reloadable
    broken = publish_good(api, versions)
    shutil.rmtree(broken / "ranker")
    assert broken.name in post(api, "/reload")["last_reload_error"]
    fixed = publish_good(api, versions)
    assert post(api, "/reload") == {
        "namespace": "demo",
        "version": fixed.name,
        "challenger": None,
        "last_reload_error": None,
    }
