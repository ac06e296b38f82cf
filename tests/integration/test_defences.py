"""Safe releases and the service's defences through ``scripts/serve.sh`` (``bentoml serve``, 2 workers) on a copy
of the published state: a forced publish and a rollback take effect under load without a failed request; admin
endpoints need the token; big bodies get 413 unread; 404s are JSON objects; the default bind is loopback; a bug
hit by one user is a 500 for that user only (counted, logged), not a degraded mode for everyone; ``/metrics``
shows per-variant counts, stage latencies and the served version."""

from __future__ import annotations

import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.settings import Settings
from serving.state import copy_serving_state
from tests.conftest import ADMIN_HEADERS
from tests.integration.processes import served
from tests.serving.support import publish_copy

pytestmark = pytest.mark.integration

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def state(version, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return copy_serving_state(version.settings, tmp_path_factory.mktemp("defences") / "state")


@pytest.fixture(scope="module")
def corrupt_user(state: Settings, known_users) -> str:
    """A known user whose online feature values are corrupt bytes: reading them raises a decode error (a bug in
    the data, not an unreachable store)."""
    from feast.infra.key_encoding_utils import deserialize_entity_key

    connection = sqlite3.connect(state.feast_dir / "demo" / "online_store.db")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = {deserialize_entity_key(key, 3).entity_values[0].string_val: key
                for (key,) in connection.execute("SELECT DISTINCT entity_key FROM recsys_demo_user_features")}  # fmt: skip
    user = next(u for u in known_users if u in keys)
    changed = connection.execute("UPDATE recsys_demo_user_features SET value = x'ff' WHERE entity_key = ?",
                                 (keys[user],)).rowcount  # fmt: skip
    connection.commit()
    connection.close()
    assert changed > 0
    return user


@pytest.fixture(scope="module")
def url(state: Settings, corrupt_user: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("bentoml-home")
    with served(state.state_dir, home, RECSYS_RELOAD_INTERVAL_SECONDS="0.5", RECSYS_SERVE_WORKERS="2",
                RECSYS_MAX_BODY_BYTES=str(MAX_BODY), RECSYS_HOST=None) as started:  # fmt: skip
        yield started.url


def post(url: str, path: str, body: object = None, **kwargs: object) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_binds_loopback_by_default(url: str):
    port = int(url.rsplit(":", 1)[1])
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                listening.add(address)
    assert listening == {"0100007F"}, f"listening on {listening}, not only 127.0.0.1"


def test_admin_endpoints_need_the_token(url: str):
    missing = post(url, "/reload")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "admin token" in missing.json()["error"]
    wrong = post(url, "/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and isinstance(wrong.json(), dict)
    event = {"events": [{"user_id": "u1", "item_id": "x", "event_type": "click"}]}
    assert post(url, "/events", event).status_code == 401  # writes are admin too
    assert post(url, "/version").status_code == 200  # reading is not
    assert post(url, "/reload", headers=ADMIN_HEADERS).status_code == 200
    nothing = post(url, "/promote", {}, headers=ADMIN_HEADERS)
    assert nothing.status_code == 409 and "no challenger" in nothing.text


def test_a_body_over_the_limit_is_refused_unread(url: str, known_users, corrupt_user: str):
    user = next(u for u in known_users if u != corrupt_user)
    big = {"user_id": user, "k": 5, "context": {"session_item_ids": ["x" * 100] * 50}, "pad": "y" * MAX_BODY}
    response = post(url, "/recommend", big)
    assert response.status_code == 413 and "over the limit" in response.json()["error"]
    assert post(url, "/recommend", {"user_id": user, "k": 5}).status_code == 200


def test_404s_are_json_objects(url: str):
    route = httpx.get(url + "/no-such-route", timeout=30)
    assert route.status_code == 404 and route.json()["path"] == "/no-such-route"
    item = post(url, "/similar", {"item_id": "no-such-item", "k": 3})
    assert item.status_code == 404 and "not in the catalogue" in item.json()["error"]


def test_a_bug_for_one_user_is_a_500_for_that_user_only(url: str, corrupt_user: str, known_users):
    others = [u for u in known_users if u != corrupt_user][:4]
    failed = post(url, "/recommend", {"user_id": corrupt_user, "k": 5})
    assert failed.status_code == 500
    for user in others:  # served as before: personalised, not degraded
        answer = post(url, "/recommend", {"user_id": user, "k": 5}).json()
        assert answer["degraded"] is False and answer["fallback"] is False and len(answer["items"]) == 5
    metrics = httpx.get(url + "/metrics", timeout=30).text
    assert 'recsys_errors_total{endpoint="recommend"}' in metrics


def test_metrics_count_variants_stages_and_the_served_version(url: str, known_users, corrupt_user: str):
    post(url, "/recommend", {"user_id": next(u for u in known_users if u != corrupt_user), "k": 5})
    post(url, "/recommend", {"user_id": "no-such-user", "k": 5})
    metrics = httpx.get(url + "/metrics", timeout=30).text
    version = post(url, "/version").json()["version"]
    assert 'recsys_requests_total{endpoint="recommend",variant="champion"}' in metrics
    assert 'recsys_fallback_total{endpoint="recommend",variant="champion"}' in metrics
    assert 'recsys_stage_seconds_bucket{le="0.005",stage="ranking",variant="champion"}' in metrics or \
        'recsys_stage_seconds_bucket{le="0.005",stage="retrieval",variant="champion"}' in metrics  # fmt: skip
    assert f'recsys_served_version{{role="champion",version="{version}"}} 1.0' in metrics


class Load:
    """Requests in a loop on fresh connections (so both workers answer), recording status and version."""

    def __init__(self, url: str, users: list[str]):
        self.url, self.users, self.answers = url, users, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            user = self.users[n % len(self.users)]
            n += 1
            try:
                response = httpx.post(self.url + "/recommend", json={"user_id": user, "k": 5}, timeout=30,
                                      headers={"Connection": "close"})  # fmt: skip
                version = response.json().get("version") if response.status_code == 200 else None
                self.answers.append((response.status_code, version))
            except httpx.HTTPError as error:
                self.answers.append((str(error), None))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def settle_on(self, version: str, timeout: float = 20.0, in_a_row: int = 12) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recent = self.answers[-in_a_row:]
            if len(recent) == in_a_row and all(v == version for _, v in recent):
                return
            time.sleep(0.1)
        raise AssertionError(f"not all on {version} after {timeout} s: {self.answers[-in_a_row:]}")


def test_a_forced_publish_and_a_rollback_under_load_drop_nothing(url: str, state: Settings, known_users,
                                                                 corrupt_user: str):  # fmt: skip
    users = [u for u in known_users if u != corrupt_user][:20]
    before = post(url, "/version").json()["version"]
    with Load(url, users) as load:
        load.settle_on(before)
        published = publish_copy(state.versions_dir)  # what `recsys pipeline --force` does at its end
        assert post(url, "/reload", headers=ADMIN_HEADERS).json()["version"] == published.name
        load.settle_on(published.name)  # the other worker followed within its reload interval
        back = post(url, "/rollback", {"reason": "test"}, headers=ADMIN_HEADERS)
        assert back.status_code == 200 and back.json()["version"] == before
        load.settle_on(before)
    statuses = [status for status, _ in load.answers]
    assert len(statuses) > 30 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert {v for _, v in load.answers} == {before, published.name}
