"""The explorer page in a real browser (Playwright driving Debian's Chromium) against ``bentoml serve`` on a copy of
the version the session's pipeline published: it loads with no console errors, a user's list renders with titles,
a filter changes it, search finds an item by its title's words, similar items open, and a recorded purchase takes
the item out of the list. Skipped where Chromium is not installed (.ci/run installs it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.browser import chromium_path, open_explorer, open_page, show_user, wait_for_list
from models.recommender.bundle import CATALOG_TABLE
from serving.state import copy_serving_state
from tests.conftest import ADMIN_TOKEN
from tests.integration.processes import served

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_path() is None, reason="Chromium is not installed (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def explorer(version, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``scripts/serve.sh`` on a copy of the published state (the test records events: the shared state stays
    untouched); yields the service's URL."""
    root = tmp_path_factory.mktemp("explorer")
    copy = copy_serving_state(version.settings, root / "state")
    with served(copy.state_dir, root, RECSYS_SERVE_WORKERS="1") as started:
        yield started.url


@pytest.fixture(scope="module")
def titles(version) -> pd.DataFrame:
    return pd.read_parquet(version.version_dir / CATALOG_TABLE).set_index("item_id")


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    with open_page() as (page, console):
        yield page
        page.screenshot(path=tmp_path / "page.png", full_page=True)  # kept with the test's files when it fails
        assert console.errors == [], f"the page reported errors: {console.errors}"


def shown(page: Any, testid: str = "result-item") -> list[dict[str, str]]:
    """The listed items as the page shows them: id, category and the title a person reads."""
    return page.eval_on_selector_all(
        f"[data-testid={testid}]",
        "nodes => nodes.map(n => ({id: n.dataset.itemId, category: n.dataset.category,"
        " title: n.querySelector('.title').textContent}))",
    )


def ids_of(items: list[dict[str, str]]) -> list[str]:
    return [item["id"] for item in items]


def test_a_users_list_renders_with_titles_and_stages(page, explorer, known_users, titles):
    user = next(iter(known_users))
    show_user(page, explorer, user, ADMIN_TOKEN)
    assert "#token" not in page.url, "the token leaves the address bar at once"
    results = shown(page)
    assert len(results) == 10
    for item in results:
        assert item["title"] == titles.loc[item["id"], "title"]
        assert item["category"] == titles.loc[item["id"], "category"]
    assert page.get_by_test_id("candidate").count() >= 10, "stage 1's table lists candidates"
    assert page.get_by_test_id("history-item").count() > 0
    assert "filtered out" in page.get_by_test_id("rules").inner_text()
    assert "retrieval" in page.get_by_test_id("timings").inner_text()
    assert page.get_by_test_id("contributions").count() == 10, "explain shows each item's top features"


def test_a_category_filter_changes_the_list(page, explorer, known_users, titles):
    user = list(known_users)[1]
    show_user(page, explorer, user, ADMIN_TOKEN)
    before = ids_of(shown(page))
    category = str(titles.loc[before[-1], "category"])
    page.get_by_test_id("category-filter").select_option(category)  # a change re-asks the service
    page.wait_for_function(
        "c => { const items = [...document.querySelectorAll('[data-testid=result-item]')];"
        " return items.length > 0 && items.every(n => n.dataset.category === c); }",
        arg=category, timeout=60_000,
    )  # fmt: skip
    wait_for_list(page, user)
    after = ids_of(shown(page))
    assert after and after != before
    assert {str(titles.loc[item, "category"]) for item in after} == {category}


def test_search_finds_an_item_by_its_title_and_opens_similar_items(page, explorer, titles):
    open_explorer(page, explorer, None)  # search and similar items need no token
    page.get_by_test_id("example-user").first.wait_for()
    item_id, title = next((str(i), str(t)) for i, t in titles["title"].items() if len(str(t).split()) >= 3)
    page.get_by_test_id("search-input").fill(title)
    page.get_by_test_id("search-submit").click()
    page.get_by_test_id("search-item").first.wait_for()
    found = ids_of(shown(page, "search-item"))
    assert item_id in found[:3], f"'{title}' ({item_id}) not in the top 3 of its own title's search: {found}"
    page.get_by_test_id("search-item").first.locator(".title").click()
    page.get_by_test_id("similar-item").first.wait_for()
    assert len(shown(page, "similar-item")) == 10


def test_a_recorded_purchase_leaves_the_list(page, explorer, known_users):
    user = list(known_users)[2]
    open_explorer(page, explorer, None)
    page.get_by_test_id("example-user").first.wait_for()
    page.get_by_test_id("user-input").fill(user)
    page.get_by_test_id("submit").click()
    assert "admin token" in page.get_by_test_id("status").inner_text(), "without the token: say what is missing"
    assert page.get_by_test_id("result-item").count() == 0
    page.get_by_test_id("token-input").fill(ADMIN_TOKEN)  # the field the status pointed to
    page.get_by_test_id("submit").click()
    wait_for_list(page, user)
    before = ids_of(shown(page))
    page.get_by_test_id("result-item").first.get_by_test_id("event-purchase").click()
    page.get_by_test_id("change-note").wait_for(state="visible", timeout=60_000)
    after = ids_of(shown(page))
    assert before[0] not in after, "a purchased item is seen: exclude_seen takes it out at once"
    assert page.get_by_test_id("change-note").inner_text().startswith("after a purchase of")


def test_the_page_loads_clean_for_an_example_user(page, explorer):
    open_explorer(page, explorer, ADMIN_TOKEN)
    example = page.get_by_test_id("example-user").first
    example.wait_for()
    user = example.inner_text()
    example.click()
    wait_for_list(page, user)
    assert page.get_by_test_id("result-item").count() == 10
