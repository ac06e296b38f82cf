"""The explorer's endpoints through the ASGI app, on the version the session's pipeline published: the view shows
exactly what ``/recommend`` serves, each stage-1 rank and move is consistent with the candidates, items carry the
catalogue's titles, filters apply, and the page and its assets are served by the service itself."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import pytest

from models.live.impressions import impressions_dir, read_impressions
from tests.serving.support import AsgiService

UNKNOWN_USER = "no-such-user"


def post(api: AsgiService, path: str, body: dict[str, Any], status: int = 200) -> Any:
    response = api.client.post(path, json=body)
    assert response.status_code == status, f"{path} {body}: {response.status_code} {response.text}"
    return response.json()


@pytest.fixture(scope="module")
def catalogue(version) -> pd.DataFrame:
    """The dataset's items as the pipeline saved them (titles, categories, prices), by item id."""
    return pd.read_parquet(version.settings.dataset_dir(version.dataset) / "items.parquet").set_index("item_id")


def test_the_view_is_what_recommend_serves(api, known_users):
    user = next(iter(known_users))
    served = post(api, "/recommend", {"user_id": user, "k": 8, "explain": True})
    view = post(api, "/explore", {"user_id": user, "k": 8})
    assert view["version"] == served["version"] and view["variant"] == "champion"
    assert [(r["item_id"], round(r["score"], 6)) for r in view["results"]] == [
        (i["item_id"], i["score"]) for i in served["items"]
    ]
    for ranked, item in zip(view["results"], served["items"], strict=True):
        assert ranked["top_features"] == item["explanation"]["top_features"]
        assert set(ranked["sources"]) == set(item["explanation"]["sources"])
    assert view["rules"] == {k: float(v) for k, v in served["items"][0]["explanation"]["rules"].items()}
    assert view["known_user"] is True and view["fallback"] is False and view["degraded"] is False
    assert {"user_features", "retrieval", "features", "model", "rules"} <= set(view["timings_ms"])


def test_stage1_ranks_and_moves_agree_with_the_candidates(api, known_users):
    user = list(known_users)[1]
    view = post(api, "/explore", {"user_id": user, "k": 10, "per_source": 50})
    stage1 = view["stage1"]
    assert 0 < stage1["retrieved"] <= stage1["k_candidates"]
    assert len(stage1["sources"]) >= 3, "a known user's candidates come from several sources"
    merged_rank: dict[str, int] = {}
    for source, candidates in stage1["sources"].items():
        ranks = [c["rank"] for c in candidates]
        assert ranks == sorted(ranks) and len(candidates) <= 50, source
        for c in candidates:
            assert merged_rank.setdefault(c["item_id"], c["fused_rank"]) == c["fused_rank"]
            assert 0 <= c["fused_rank"] < stage1["retrieved"]
    for rank, result in enumerate(view["results"]):
        assert result["rank"] == rank
        if result["stage1_rank"] is None:
            assert result["sources"] == {} and result["movement"] is None
            continue
        assert result["movement"] == result["stage1_rank"] - rank
        if result["item_id"] in merged_rank:
            assert merged_rank[result["item_id"]] == result["stage1_rank"]
        for source, found in result["sources"].items():  # a source's best 50 shown: its rank there matches
            listed = {c["item_id"]: c["rank"] for c in stage1["sources"].get(source, [])}
            if result["item_id"] in listed:
                assert listed[result["item_id"]] == found["rank"]
    assert any(r["movement"] for r in view["results"]), "re-ranking moved nothing: is the ranker scoring?"


def test_history_and_items_carry_the_catalogue(api, known_users, catalogue):
    user, seen = next(iter(known_users.items()))
    view = post(api, "/explore", {"user_id": user})
    assert view["history"], "a known user has a recent history"
    assert {h["item_id"] for h in view["history"]} <= set(seen)
    times = [h["at"] for h in view["history"]]
    assert times == sorted(times, reverse=True), "newest first"
    shown = view["history"] + view["results"] + [c for cs in view["stage1"]["sources"].values() for c in cs]
    for item in shown:
        row = catalogue.loc[item["item_id"]]
        assert item["title"] == row["title"] and item["category"] == row["category"]
        assert item["price"] == pytest.approx(row["price"])


def test_filters_reach_the_list(api, known_users):
    user = list(known_users)[2]
    unfiltered = post(api, "/explore", {"user_id": user, "k": 10})
    category = unfiltered["results"][-1]["category"]
    by_category = post(api, "/explore", {"user_id": user, "k": 10, "filters": {"categories": [category]}})
    assert by_category["results"] and {r["category"] for r in by_category["results"]} == {category}
    cap = sorted(r["price"] for r in unfiltered["results"])[len(unfiltered["results"]) // 2]
    cheap = post(api, "/explore", {"user_id": user, "k": 10, "filters": {"max_price": cap}})
    assert cheap["results"] and all(r["price"] <= cap for r in cheap["results"])
    assert [r["item_id"] for r in cheap["results"]] != [r["item_id"] for r in unfiltered["results"]]


def test_an_unknown_user_gets_the_fallback_view(api):
    view = post(api, "/explore", {"user_id": UNKNOWN_USER, "k": 5})
    assert view["fallback"] is True and view["known_user"] is False and view["history"] == []
    assert len(view["results"]) == 5


def test_bad_explore_requests_are_422(api, items):
    assert "per_source" in str(post(api, "/explore", {"user_id": "u1", "per_source": 0}, status=422))
    session = {"user_id": "u1", "context": {"session_item_ids": ["no-such-item"]}}
    assert "no-such-item" in str(post(api, "/explore", session, status=422))


def test_info_offers_known_users_and_every_category(api, version, catalogue):
    info = post(api, "/explore/info", {})
    assert info["version"] == version.version and info["namespace"] == "demo" and info["items"] == len(catalogue)
    assert info["categories"] == sorted(catalogue["category"].unique())
    assert info["example_users"] == version.manifest["explorer"]["example_users"] and len(info["example_users"]) >= 3
    for user in info["example_users"][:3]:
        assert post(api, "/explore", {"user_id": user, "k": 3})["known_user"] is True


def test_items_are_described_and_unknown_ids_left_out(api, catalogue):
    ids = [str(i) for i in catalogue.index[:3]]
    described = post(api, "/explore/items", {"item_ids": [*ids, "no-such-item"]})
    assert [d["item_id"] for d in described] == ids
    assert [d["title"] for d in described] == catalogue.loc[ids, "title"].tolist()


def test_exploring_logs_no_impression(api, version, known_users):
    runtime = api.instance.runtime
    folder = impressions_dir(version.settings, version.dataset)

    def logged_rows() -> int:
        runtime.flush_impressions()
        return len(read_impressions(folder)[0]) if folder.exists() else 0

    before = logged_rows()
    post(api, "/explore", {"user_id": next(iter(known_users)), "k": 4})
    assert logged_rows() == before, "a person inspecting a list is not a customer who saw it"
    post(api, "/recommend", {"user_id": next(iter(known_users)), "k": 4})
    assert logged_rows() == before + 4, "while /recommend is logged"


def test_explore_needs_the_admin_token(api, known_users):
    user = next(iter(known_users))
    bare = api.client.post("/explore", json={"user_id": user}, headers={"Authorization": ""})
    assert bare.status_code == 401, "it shows a user's history"
    wrong = api.client.post("/explore", json={"user_id": user}, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403
    for path, body in (("/explore/info", {}), ("/explore/items", {"item_ids": ["x"]})):  # the catalogue is public
        assert api.client.post(path, json=body, headers={"Authorization": ""}).status_code == 200


def test_the_page_and_its_assets_are_served_offline(api):
    page = api.client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for testid in ("user-input", "submit", "results", "candidates"):
        assert f'data-testid="{testid}"' in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {"app.js", "style.css"} <= set(assets)
    for asset in ("app.js", "style.css"):
        response = api.client.get(f"/ui/{asset}")
        assert response.status_code == 200 and response.text
        assert not re.search(r"https?://", response.text), f"{asset} must not load anything from the network"
    assert not re.search(r"(?:src|href)=\"https?://", page.text)
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, "no CDN, no inline script"
    assert api.client.get("/ui/no-such-file.js").status_code == 404
