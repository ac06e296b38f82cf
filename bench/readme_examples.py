"""``python -m bench.readme_examples --url URL --state DIR --user ID``: the README's example requests, run for real.

Sends the README's requests to a running demo service and writes the console blocks (request, raw answer, titles
of the items) between the README's ``examples`` and ``live-examples`` markers, so the README shows what the code
answers now. The live examples change what the service holds (a purchase, a sold-out item, a new item): run it
against a copy of a state, not a service people use.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from flows.quality import replace_block
from serving.service import ADMIN_PATHS

EXAMPLES = (
    "<!-- examples:begin (written by bench/readme_examples.py; do not edit by hand) -->",
    "<!-- examples:end -->",
)
LIVE = ("<!-- live-examples:begin (written by bench/readme_examples.py; do not edit by hand) -->",
        "<!-- live-examples:end -->")  # fmt: skip


class Console:
    """Posts requests and keeps the transcript."""

    def __init__(self, url: str, catalog: pd.DataFrame):
        self.url, self.catalog, self.lines = url.rstrip("/"), catalog, ["```console"]

    def post(self, path: str, body: dict[str, Any] | None = None, titles: bool = False) -> dict[str, Any]:
        admin = path in ADMIN_PATHS
        token = os.environ.get("RECSYS_ADMIN_TOKEN", "")
        response = httpx.post(self.url + path, json=body, timeout=60,
                              headers={"Authorization": f"Bearer {token}"} if admin else {})  # fmt: skip
        auth = ' -H "Authorization: Bearer $RECSYS_ADMIN_TOKEN"' if admin else ""
        data = f" -H 'Content-Type: application/json' -d '{json.dumps(body)}'" if body is not None else ""
        self.lines += [f"$ curl -s -X POST localhost:3000{path}{auth}{data}", response.text]
        answer = response.json()
        if titles and response.status_code == 200:
            self.lines.append(f"# HTTP 200: {', '.join(self.title(i['item_id']) for i in answer['items'])}")
        elif path not in ("/reload", "/version"):
            self.lines.append(f"# HTTP {response.status_code}")
        return answer if isinstance(answer, dict) else {"detail": answer}

    def title(self, item_id: str) -> str:
        if item_id not in self.catalog.index:
            return item_id
        row = self.catalog.loc[item_id]
        return f'{item_id} "{row["title"]}" ({row["price"]:.2f})'

    def text(self) -> str:
        return "\n".join([*self.lines, "```"])


def service_examples(console: Console, user: str) -> list[str]:
    first = console.post("/recommend", {"user_id": user, "k": 3, "explain": True}, titles=True)
    shown = [i["item_id"] for i in first["items"]]
    console.post("/recommend", {"user_id": user, "k": 3, "filters": {"max_price": 50}}, titles=True)
    console.post("/recommend", {"user_id": "new-visitor", "k": 3}, titles=True)
    session = [str(i) for i in console.catalog.index[console.catalog["category"] == "coffee"][:3]]
    body = {"user_id": "new-visitor", "k": 3, "context": {"session_item_ids": session}}
    console.post("/recommend", body, titles=True)
    console.post("/similar", {"item_id": shown[0], "k": 3}, titles=True)
    console.post("/search", {"query": "waterproof hiking boots", "k": 3, "user_id": user}, titles=True)
    console.post("/recommend", {"user_id": user, "k": 500})
    console.post("/recommend", {"user_id": user, "context": {"device": "mobile"}})
    console.post("/reload")
    console.post("/version")
    return shown


def live_examples(console: Console, user: str) -> None:
    first = console.post("/recommend", {"user_id": user, "k": 3}, titles=True)
    shown = [i["item_id"] for i in first["items"]]
    purchase = {"user_id": user, "item_id": shown[0], "event_type": "purchase", "request_id": first["request_id"]}
    console.post("/events", {"events": [purchase]})
    changes = [
        {"item_id": shown[1], "in_stock": False},
        {"item_id": shown[2], "price": 19.99},
        {"item_id": "new-1", "title": "Zorbix trail running shoe", "category": "running shoes", "price": 79.0},
    ]
    console.post("/items", {"items": changes})
    console.post("/recommend", {"user_id": user, "k": 3}, titles=True)
    console.post("/search", {"query": "Zorbix trail running shoe", "k": 2}, titles=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--state", type=Path, required=True, help="the served state (for item titles)")
    parser.add_argument("--user", default="u00644")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args(argv)
    catalog = pd.read_parquet(args.state / "data" / "demo" / "items.parquet").set_index("item_id")
    service = Console(args.url, catalog)
    service_examples(service, args.user)
    live = Console(args.url, catalog)
    live_examples(live, args.user)
    text = replace_block(args.readme.read_text(), service.text(), *EXAMPLES)
    args.readme.write_text(replace_block(text, live.text(), *LIVE))
    print(service.text(), live.text(), sep="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
