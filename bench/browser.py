"""The explorer page in a real browser: Playwright driving the system's Chromium (Playwright's own browser download
is not needed), for the browser test and for the README's screenshots.

    RECSYS_ADMIN_TOKEN=… python -m bench.browser --url http://127.0.0.1:3000 --out docs/img [--user u00644]

writes ``explorer.png`` (a user's list, stage by stage), ``explorer-stage1.png`` (the stage-1 candidates per
source) and ``explorer-search.png`` (search and similar items).
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("RECSYS_CHROMIUM", "/usr/bin/chromium")
"""Debian's chromium (``apt-get install chromium``; .ci/run installs it)."""
RESULTS_TIMEOUT_MS = 60_000


def chromium_path() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    found = shutil.which(CHROMIUM)
    return found if found and os.access(found, os.X_OK) else None


@dataclass
class Console:
    """What the page reported: console errors and uncaught exceptions (a clean page has none)."""

    errors: list[str] = field(default_factory=list)


@contextmanager
def open_page(width: int = 1440, height: int = 1000) -> Iterator[tuple[Any, Console]]:
    """A fresh page in headless Chromium, with its console errors collected."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set RECSYS_CHROMIUM)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=args)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            console = Console()
            page.on("console", lambda m: console.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console.errors.append(str(e)))
            yield page, console
        finally:
            browser.close()


def open_explorer(page: Any, base_url: str, token: str | None) -> None:
    """Open the page the way ``make demo`` prints it: the admin token in the address's fragment (never sent)."""
    page.goto(f"{base_url}/ui/" + (f"#token={token}" if token else ""))


def show_user(page: Any, base_url: str, user: str, token: str | None) -> None:
    """Open the explorer, ask for ``user``'s list, wait until it is drawn."""
    open_explorer(page, base_url, token)
    page.get_by_test_id("example-user").first.wait_for(timeout=RESULTS_TIMEOUT_MS)
    page.get_by_test_id("user-input").fill(user)
    page.get_by_test_id("submit").click()
    wait_for_list(page, user)


def wait_for_list(page: Any, user: str) -> None:
    page.wait_for_function(
        "user => document.querySelector('[data-testid=status]').textContent.includes('items for ' + user)",
        arg=user, timeout=RESULTS_TIMEOUT_MS,
    )  # fmt: skip


def screenshots(base_url: str, out: Path, user: str | None, query: str | None, token: str | None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with open_page() as (page, console):
        open_explorer(page, base_url, token)
        page.get_by_test_id("example-user").first.wait_for(timeout=RESULTS_TIMEOUT_MS)
        user = user or page.get_by_test_id("example-user").first.inner_text()
        show_user(page, base_url, user, token)
        list_shot, stage1_shot = out / "explorer.png", out / "explorer-stage1.png"
        page.screenshot(path=list_shot)  # the viewport: controls, rules, timings, history and the re-ranked list
        box = page.locator("#candidates-panel").bounding_box()
        page.screenshot(path=stage1_shot, full_page=True, clip={**box, "height": min(box["height"], 760)})
        first = page.get_by_test_id("result-item").first.locator(".title").inner_text()
        page.get_by_test_id("search-input").fill(query or " ".join(first.split()[-2:]))
        page.get_by_test_id("search-submit").click()
        page.get_by_test_id("search-item").first.wait_for(timeout=RESULTS_TIMEOUT_MS)
        page.get_by_test_id("search-item").first.locator(".title").click()
        page.get_by_test_id("similar-item").first.wait_for(timeout=RESULTS_TIMEOUT_MS)
        search_shot = out / "explorer-search.png"
        page.locator(".columns").last.screenshot(path=search_shot)
        if console.errors:
            raise RuntimeError(f"the page reported errors: {console.errors}")
    return [list_shot, stage1_shot, search_shot]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--user", help="default: the first example user the page offers")
    parser.add_argument("--query", help="search words (default: the last two words of the first item's title)")
    parser.add_argument("--token", default=os.environ.get("RECSYS_ADMIN_TOKEN"),
                        help="the service's admin token (default: RECSYS_ADMIN_TOKEN): /explore needs it")  # fmt: skip
    args = parser.parse_args()
    for path in screenshots(args.url.rstrip("/"), args.out, args.user, args.query, args.token):
        print(path)


if __name__ == "__main__":
    main()
