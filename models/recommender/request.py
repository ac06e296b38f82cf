"""What goes into and comes out of one recommendation request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.ranking.rules import Filters
from models.retrieval.fusion import Candidates
from models.retrieval.sources import UserQuery

NO_FILTERS = Filters()


@dataclass(frozen=True)
class Request:
    user_id: str | None
    k: int = 10
    as_of: float = 0.0
    filters: Filters = NO_FILTERS
    exclude_seen: bool = True
    explain: bool = False
    session_item_ids: tuple[str, ...] = ()
    query_vector: np.ndarray | None = None
    """Search: the encoded query text; candidates then come from semantic retrieval only."""


@dataclass(frozen=True)
class Retrieval:
    """Stage 1's answer to a request: the query it ran, the merged candidates and the user's seen items."""

    query: UserQuery
    candidates: Candidates
    rows: np.ndarray
    seen: frozenset[str]
    fallback: bool


@dataclass
class Recommended:
    item_id: str
    score: float
    explanation: dict[str, Any] | None = None
    sources: tuple[str, ...] = ()
    """The stage-1 sources that retrieved the item (empty: added by the rules' fill)."""


@dataclass
class Result:
    items: list[Recommended]
    fallback: bool = False
    degraded: bool = False
    candidates: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    features: np.ndarray | None = None
    """The ranker's input row of each item in ``items`` (NaN rows for filled items); None when not re-ranked."""
    request_id: str | None = None
    """Set by the service: names the list in the impression log, and events can name it back."""
