"""The request's session items are the newest history of its stage-1 query."""

from __future__ import annotations

from models.features.spec import USER_EVENTS, USER_RECENT_ITEMS, USER_RECENT_TIMES, USER_SEEN_ITEMS
from models.recommender.request import Request
from models.recommender.retrieval import is_fallback, query_for

USER = {USER_EVENTS: 3.0, USER_RECENT_ITEMS: ["a", "b"], USER_RECENT_TIMES: [10.0, 20.0], USER_SEEN_ITEMS: ["a", "b"]}


def test_session_items_come_after_the_stored_history_at_the_request_time():
    query, seen = query_for(Request(user_id="u", as_of=100.0, session_item_ids=("c", "d")), USER)
    assert query.history_items == ["a", "b", "c", "d"]
    assert query.history_times == [10.0, 20.0, 100.0, 100.0]
    assert seen == {"a", "b"}, "a session view is not a reason to hide the item"


def test_an_unknown_user_with_a_session_is_not_a_fallback():
    assert is_fallback(Request(user_id="new", as_of=1.0), None, degraded=False)
    assert not is_fallback(Request(user_id="new", as_of=1.0, session_item_ids=("c",)), None, degraded=False)
    query, _ = query_for(Request(user_id="new", as_of=1.0, session_item_ids=("c",)), None)
    assert query.history_items == ["c"]
