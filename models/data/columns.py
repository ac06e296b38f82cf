"""One column vocabulary for every table the platform reads or writes."""

from __future__ import annotations

# keys
USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"

# items
TITLE = "title"
DESCRIPTION = "description"
CATEGORY = "category"
CREATED_AT = "created_at"
PRICE = "price"
TAGS = "tags"
"""Optional item labels beyond the category (genres, styles, brands), separated by ``TAG_SEPARATOR``."""
TAG_SEPARATOR = "|"
IN_STOCK = "in_stock"
STOCKOUT_AT = "stockout_at"
RESTOCK_AT = "restock_at"
"""Stock as a point-in-time fact: an item is out of stock from ``stockout_at`` until ``restock_at`` (either may be
empty); ``in_stock`` is the state at the end of the data."""

# users
AGE_BAND = "age_band"
SEGMENT = "segment"
DEVICE = "device"
GENDER = "gender"
OCCUPATION = "occupation"

# interactions
EVENT_TYPE = "event_type"
RATING = "rating"
WEIGHT = "weight"

# event types, in funnel order (weakest signal first)
VIEW = "view"
CLICK = "click"
ADD_TO_CART = "add_to_cart"
PURCHASE = "purchase"
RATED = "rating"

EVENT_TYPES: tuple[str, ...] = (VIEW, CLICK, ADD_TO_CART, PURCHASE, RATED)
"""Every event type the contract accepts."""

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {VIEW: 1.0, CLICK: 2.0, ADD_TO_CART: 3.0, PURCHASE: 5.0, RATED: 1.0}
"""Weight given to an event when the interactions file has no weight column."""

POSITIVE_RATING = 4.0
"""A rating at or above this is a positive (the shared evaluation protocol)."""

POSITIVE_EVENTS: frozenset[str] = frozenset({CLICK, ADD_TO_CART, PURCHASE})
"""Event types that count as positives for implicit-feedback datasets (the demo catalog)."""
CONVERSION_EVENTS: frozenset[str] = frozenset({ADD_TO_CART, PURCHASE})
"""The positives that make money: evaluated on their own beside all positives (clicks mostly follow taste)."""

# stage-1 sources: candidate provenance columns are named after them (s1_<source>_rank / _score)
STAGE1_SOURCES: tuple[str, ...] = (
    "ease", "rp3beta", "item_knn", "ials", "ease_recent", "sequence", "cooc_last", "cooc_recent",
    "popular_short", "popular_long", "semantic", "fresh",
)  # fmt: skip
