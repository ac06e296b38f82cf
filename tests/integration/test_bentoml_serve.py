"""The service over HTTP: ``scripts/serve.sh`` (``bentoml serve serving.service:RecSys``) in a subprocess on a free
port, with the published state and a throw-away BentoML home; requests through ``bentoml.SyncHTTPClient`` and
plain HTTP; the server's process group is ended at teardown whatever happened."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from bentoml.exceptions import NotFound

from tests.integration.processes import Served, served, stop, tail

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(version, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(version.settings.state_dir, tmp_path_factory.mktemp("bentoml-home")) as started:
        yield started


def as_dict(answer: Any) -> dict[str, Any]:
    return answer if isinstance(answer, dict) else answer.model_dump()


def test_recommend_over_http(server, version, known_users):
    user = next(iter(known_users))
    answer = as_dict(server.client.recommend(user_id=user, k=5, explain=True))
    assert answer["version"] == version.version
    assert len({item["item_id"] for item in answer["items"]}) == 5
    assert answer["fallback"] is False and answer["degraded"] is False
    assert all(item["explanation"]["sources"] for item in answer["items"])
    unknown = as_dict(server.client.recommend(user_id="no-such-user", k=3))
    assert unknown["fallback"] is True and len(unknown["items"]) == 3


def test_similar_over_http(server, version, items):
    item = str(items.index[0])
    answer = as_dict(server.client.similar(item_id=item, k=4))
    assert answer["version"] == version.version and len(answer["items"]) == 4
    assert item not in {i["item_id"] for i in answer["items"]}
    with pytest.raises(NotFound):
        server.client.similar(item_id="no-such-item", k=4)


def test_search_over_http(server, version, items):
    category = str(items["item_category"].iloc[0])
    answer = as_dict(server.client.search(query=category, k=5, filters={"categories": [category]}))
    assert answer["version"] == version.version and len(answer["items"]) == 5
    assert set(items.loc[[i["item_id"] for i in answer["items"]], "item_category"]) == {category}


def test_health_version_and_invalid_input_over_http(server, version):
    assert as_dict(server.client.version()) == {
        "namespace": "demo",
        "version": version.version,
        "challenger": None,
        "last_reload_error": None,
    }
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        assert http.get("/livez").status_code == 200
        assert "bentoml_service_request" in http.get("/metrics").text
        invalid = http.post("/recommend", json={"user_id": "u", "k": 0})
        assert invalid.status_code == 422
        assert ["k"] in [error["loc"] for error in invalid.json()["detail"]]


def test_server_stops_cleanly_on_sigterm(server):
    """Last in the module: ends the server; the fixture's teardown then has nothing left to do."""
    server.client.close()
    code = stop(server.process)
    assert code is not None, f"the server ignored SIGTERM for 30 s:\n{tail(server.log)}"
    with pytest.raises(ProcessLookupError):
        os.killpg(server.process.pid, 0)  # no process of its group is left
