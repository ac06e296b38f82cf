"""The retrieval policy of a request: which stage-1 query a user's features make, and which candidates it gets.

- a known user: every stage-1 source, fused (``Stage1.candidates``);
- an unknown user (no features, no session): popular and fresh items only — the ``fallback``;
- a search (an encoded query text): semantic retrieval only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.features.assembly import as_list
from models.features.spec import USER_EVENTS, USER_RECENT_ITEMS, USER_RECENT_TIMES, USER_SEEN_ITEMS
from models.recommender.request import Request, Retrieval
from models.retrieval.fusion import Candidates, merge, scale_quotas
from models.retrieval.sources import SemanticSource, UserQuery
from models.retrieval.stage1 import Stage1

FALLBACK_SHARES = {"popular_short": 0.7, "fresh": 0.3}
"""How an unknown user's list is shared between trending and new items."""


def user_is_known(user: Mapping[str, Any] | None) -> bool:
    """The online store knows the user when it returned their activity count."""
    if user is None:
        return False
    events = user.get(USER_EVENTS)
    return events is not None and not (isinstance(events, float) and np.isnan(events))


def query_for(request: Request, user: Mapping[str, Any] | None) -> tuple[UserQuery, frozenset[str]]:
    """The stage-1 query from the user's features (recent positives, items seen), and the seen items. The
    request's session items, when given, are the newest history: the session sources and features start from them."""
    features = user if user is not None and user_is_known(user) else {}
    seen = frozenset(as_list(features.get(USER_SEEN_ITEMS)))
    session = list(request.session_item_ids)
    query = UserQuery(
        user_id=request.user_id,
        as_of=request.as_of,
        history_items=[str(i) for i in as_list(features.get(USER_RECENT_ITEMS))] + session,
        history_times=[float(t) for t in as_list(features.get(USER_RECENT_TIMES))] + [request.as_of] * len(session),
        seen=[str(i) for i in as_list(features.get(USER_SEEN_ITEMS))],
        text_vector=request.query_vector,
        exclude=seen if request.exclude_seen else frozenset(),
    )
    return query, seen


def is_fallback(request: Request, user: Mapping[str, Any] | None, degraded: bool) -> bool:
    """Unknown user, no session, not a search, and the store answered: popular and fresh items."""
    return not user_is_known(user) and not degraded and request.query_vector is None and not request.session_item_ids


def retrieve(stage1: Stage1, request: Request, user: Mapping[str, Any] | None, k: int, degraded: bool) -> Retrieval:
    """Stage 1 for a request: the query built from the user's features, and ``k`` merged candidates."""
    query, seen = query_for(request, user)
    fallback = is_fallback(request, user, degraded)
    if query.text_vector is not None:
        candidates = search_candidates(stage1, query, k)
    elif fallback:
        candidates = fallback_candidates(stage1, query, k)
    else:
        candidates = stage1.candidates(query, k)
    return Retrieval(query, candidates, candidates.rows, seen, fallback)


def search_candidates(stage1: Stage1, query: UserQuery, k: int) -> Candidates:
    semantic = stage1.source("semantic")
    assert isinstance(semantic, SemanticSource)
    query = stage1.with_rows(query)
    result = stage1.available(semantic.retrieve(query, k), query.as_of)
    return merge([result], {result.source: k}, k, stage1.item_ids)


def fallback_candidates(stage1: Stage1, query: UserQuery, k: int) -> Candidates:
    quotas = scale_quotas(FALLBACK_SHARES, k)
    results = [stage1.available(stage1.source(name).retrieve(query, quotas[name] * 2), query.as_of)
               for name in FALLBACK_SHARES]  # fmt: skip
    return merge(results, quotas, k, stage1.item_ids)
