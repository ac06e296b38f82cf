"""A deterministic, realistic e-commerce catalogue with users and a view → click → cart → purchase funnel.

Built so that a re-ranker can learn what stage 1 cannot:
- taste (category × style) drives which items a user *views*: co-occurrence and text carry it, so stage 1 finds it;
- price decides whether a view turns into a cart and a purchase: each user has a preferred price level within a
  category and a sensitivity to distance from it;
- stock decides purchases: an item is still viewed while out of stock (from its stock-out until its restock, if
  any) but never bought then; stock-out and restock times are in the catalogue, so stock is known as of any time;
- recency: items attract a burst of attention after launch, and users differ in their appetite for new items.
Observable user attributes (segment, device, age band) are noisy reflections of those latent traits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.clock import DAY_SECONDS as DAY
from models.data.contract import Dataset, in_stock_at, validate_dataset

DEMO_END = pd.Timestamp("2026-06-30T23:59:59", tz="UTC")
"""The demo's 'now': fixed so that the catalogue is the same on every machine and every day."""
HISTORY_DAYS = 365
STOCKOUT_SHARE = 0.15
"""Items that run out of stock at some time; of those, ``RESTOCK_SHARE`` come back 7-60 days later."""
RESTOCK_SHARE = 0.5
CATALOGUE_DAYS = 730


@dataclass(frozen=True)
class Category:
    name: str
    nouns: tuple[str, ...]
    words: tuple[str, ...]
    log_price: float
    price_spread: float


CATEGORIES: tuple[Category, ...] = (
    Category("running shoes", ("running shoe", "trail runner", "racing flat"), ("cushioned", "breathable mesh", "grippy outsole", "marathon"), 4.5, 0.35),
    Category("hiking gear", ("hiking backpack", "trekking pole", "hiking boot"), ("waterproof", "mountain trail", "rugged", "summit"), 4.6, 0.45),
    Category("cookware", ("frying pan", "saucepan", "dutch oven"), ("non-stick", "cast iron", "induction ready", "kitchen"), 4.0, 0.5),
    Category("coffee", ("espresso beans", "coffee grinder", "pour-over kettle"), ("single origin", "roast", "barista", "aroma"), 3.3, 0.6),
    Category("smartphones", ("smartphone", "phone case", "fast charger"), ("5G", "OLED display", "battery life", "camera"), 5.6, 0.7),
    Category("laptops", ("laptop", "ultrabook", "laptop sleeve"), ("processor", "SSD storage", "keyboard", "screen"), 6.6, 0.45),
    Category("headphones", ("wireless headphones", "earbuds", "studio headphones"), ("noise cancelling", "bass", "bluetooth", "audio"), 4.8, 0.6),
    Category("skincare", ("face serum", "moisturiser", "sunscreen"), ("hydrating", "vitamin C", "SPF", "gentle formula"), 3.2, 0.5),
    Category("fragrance", ("eau de parfum", "cologne", "scented candle"), ("floral notes", "musk", "citrus", "long-lasting"), 4.2, 0.5),
    Category("books", ("novel", "cookbook", "biography"), ("hardcover", "bestselling author", "chapters", "story"), 2.8, 0.35),
    Category("board games", ("board game", "card game", "puzzle"), ("strategy", "family night", "players", "dice"), 3.4, 0.4),
    Category("toys", ("building blocks", "plush toy", "toy car"), ("kids", "colourful", "ages 3+", "playtime"), 3.1, 0.5),
    Category("furniture", ("armchair", "bookshelf", "coffee table"), ("solid wood", "living room", "upholstered", "assembly"), 5.5, 0.5),
    Category("bedding", ("duvet cover", "pillow", "weighted blanket"), ("cotton", "sleep", "thread count", "soft"), 3.9, 0.45),
    Category("gardening", ("garden hose", "pruning shears", "planter"), ("outdoor", "plants", "soil", "greenhouse"), 3.3, 0.5),
    Category("pet supplies", ("dog bed", "cat tree", "pet food bowl"), ("dog", "cat", "chew-proof", "pets"), 3.4, 0.5),
    Category("cycling", ("road bike", "bike helmet", "cycling jersey"), ("carbon frame", "gears", "aerodynamic", "ride"), 5.2, 0.8),
    Category("yoga & fitness", ("yoga mat", "dumbbell set", "resistance band"), ("workout", "stretch", "gym", "training"), 3.5, 0.5),
    Category("watches", ("wristwatch", "smartwatch", "watch strap"), ("chronograph", "sapphire glass", "water resistant", "dial"), 5.3, 0.7),
    Category("jewellery", ("necklace", "ring", "earrings"), ("sterling silver", "gold plated", "gemstone", "pendant"), 4.3, 0.7),
    Category("menswear", ("oxford shirt", "chino trousers", "wool blazer"), ("tailored fit", "menswear", "collar", "office"), 4.1, 0.45),
    Category("womenswear", ("summer dress", "knit cardigan", "wide-leg trousers"), ("flowing", "womenswear", "silhouette", "wardrobe"), 4.1, 0.45),
    Category("cameras", ("mirrorless camera", "camera lens", "tripod"), ("megapixel", "aperture", "photography", "autofocus"), 6.0, 0.6),
    Category("gaming", ("game controller", "gaming headset", "mechanical keyboard"), ("RGB", "console", "low latency", "esports"), 4.3, 0.5),
)  # fmt: skip

STYLES: dict[str, tuple[str, str]] = {
    "minimalist": ("sleek", "clean lines and a pared-back minimalist design"),
    "vintage": ("retro", "a vintage look inspired by classic designs"),
    "sporty": ("performance", "a sporty build for active days"),
    "luxury": ("premium", "luxury materials and refined finishing"),
    "eco": ("sustainable", "recycled, eco-friendly materials"),
    "playful": ("colourful", "a playful, bold and fun character"),
    "professional": ("pro-grade", "professional reliability for serious use"),
    "budget": ("essential", "a budget-friendly, no-frills everyday design"),
}
STYLE_PRICE_SHIFT = {"luxury": 0.6, "professional": 0.35, "budget": -0.55, "eco": 0.15}
COLOURS = ("black", "white", "navy", "olive", "sand", "charcoal", "red", "teal", "graphite", "ivory")
MATERIALS = ("aluminium", "cotton", "leather", "bamboo", "steel", "recycled plastic", "wool", "glass", "oak", "canvas")
BRAND_SYLLABLES = ("nor", "va", "lu", "ken", "ari", "zo", "mel", "tra", "quin", "bo", "sel", "dra", "fi", "om")
DEVICES = ("mobile", "desktop", "tablet")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")


def _brands(rng: np.random.Generator, n: int) -> np.ndarray:
    names = {"".join(rng.choice(BRAND_SYLLABLES, size=rng.integers(2, 4))).capitalize() for _ in range(n * 3)}
    return np.array(sorted(names)[:n])


def _times(seconds: np.ndarray) -> pd.Series:
    """Unix seconds → UTC timestamps; infinity (never) becomes empty."""
    finite = np.isfinite(seconds)
    return pd.Series(pd.to_datetime(np.where(finite, np.round(seconds), 0), unit="s", utc=True)).where(finite)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _make_items(rng: np.random.Generator, n_items: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Items with their hidden traits (quality, price position within the category, stock-out time)."""
    n_cat, style_names = len(CATEGORIES), list(STYLES)
    cat_weight = 1.0 / np.arange(1, n_cat + 1) ** 0.6
    category = rng.choice(n_cat, size=n_items, p=cat_weight / cat_weight.sum())
    style = rng.integers(0, len(style_names), size=n_items)
    quality = rng.normal(0.0, 1.0, size=n_items)
    log_mu = np.array([c.log_price for c in CATEGORIES])[category]
    log_sd = np.array([c.price_spread for c in CATEGORIES])[category]
    shift = np.array([STYLE_PRICE_SHIFT.get(s, 0.0) for s in style_names])[style]
    price_z = rng.normal(0.0, 1.0, size=n_items) + shift / 0.5 + 0.3 * quality
    price = np.round(np.exp(log_mu + log_sd * 0.5 * price_z), 0) - 0.01
    price = np.maximum(price, 0.99)
    created = DEMO_END.value / 1e9 - rng.uniform(0, CATALOGUE_DAYS * DAY, size=n_items)
    end = DEMO_END.value / 1e9
    runs_out = rng.random(n_items) < STOCKOUT_SHARE
    stockout = np.where(runs_out, rng.uniform(created, end), np.inf)
    restocked = runs_out & (rng.random(n_items) < RESTOCK_SHARE)
    restock = np.where(restocked, stockout + rng.uniform(7, 60, size=n_items) * DAY, np.inf)
    restock[restock > end] = np.inf  # restocking after the demo's end: still out of stock

    brands = _brands(rng, 60)
    brand = brands[rng.integers(0, len(brands), size=n_items)]
    colour = np.array(COLOURS)[rng.integers(0, len(COLOURS), size=n_items)]
    material = np.array(MATERIALS)[rng.integers(0, len(MATERIALS), size=n_items)]
    titles, descriptions = [], []
    word_pick = rng.integers(0, 4, size=(n_items, 2))
    noun_pick = rng.integers(0, 3, size=n_items)
    for i in range(n_items):
        cat = CATEGORIES[category[i]]
        adjective, phrase = STYLES[style_names[style[i]]]
        noun = cat.nouns[noun_pick[i]]
        w1, w2 = cat.words[word_pick[i, 0]], cat.words[(word_pick[i, 0] + 1 + word_pick[i, 1] % 3) % 4]
        titles.append(f"{brand[i]} {adjective} {colour[i]} {noun}")
        descriptions.append(
            f"A {w1} {noun} from {brand[i]}'s {cat.name} range, with {phrase}. "
            f"Key feature: {w2}. Made of {material[i]}."
        )
    items = pd.DataFrame(
        {
            C.ITEM_ID: [f"i{i:06d}" for i in range(n_items)],
            C.TITLE: titles,
            C.DESCRIPTION: descriptions,
            C.CATEGORY: np.array([c.name for c in CATEGORIES])[category],
            C.CREATED_AT: pd.to_datetime(np.round(created), unit="s", utc=True),
            C.PRICE: price,
            C.STOCKOUT_AT: _times(stockout),
            C.RESTOCK_AT: _times(restock),
            C.TAGS: [f"{st}{C.TAG_SEPARATOR}{b}" for st, b in zip(np.array(style_names)[style], brand, strict=True)],
            "brand": brand,
            "style": np.array(style_names)[style],
        }
    )
    hidden = {
        "category": category, "style": style, "quality": quality, "price_z": price_z,
        "created": created, "stockout": stockout, "restock": restock,
    }  # fmt: skip
    return items, hidden


def _make_users(rng: np.random.Generator, n_users: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Users with latent taste (category and style mix), price level and sensitivity, novelty appetite."""
    n_cat, n_style = len(CATEGORIES), len(STYLES)
    cat_pref = rng.dirichlet(np.full(n_cat, 0.15), size=n_users) * 0.9 + 0.1 / n_cat
    style_pref = rng.dirichlet(np.full(n_style, 0.4), size=n_users) * 0.9 + 0.1 / n_style
    price_level = rng.normal(0.0, 1.0, size=n_users)
    price_sensitivity = rng.gamma(2.0, 0.6, size=n_users)
    novelty = rng.beta(1.2, 2.5, size=n_users)
    activity = rng.lognormal(0.0, 0.9, size=n_users)
    noisy_level = price_level + rng.normal(0, 0.4, size=n_users)
    segment = np.where(
        noisy_level < -0.6, "bargain_hunter",
        np.where(noisy_level > 0.6, "premium", np.where(novelty > 0.45, "trend_seeker", "mainstream")),
    )  # fmt: skip
    start = DEMO_END.value / 1e9 - HISTORY_DAYS * DAY
    signup = start - rng.uniform(-0.9 * HISTORY_DAYS * DAY, HISTORY_DAYS * DAY, size=n_users)
    device = np.array(DEVICES)[rng.choice(3, size=n_users, p=[0.6, 0.3, 0.1])]
    age = np.array(AGE_BANDS)[rng.choice(5, size=n_users, p=[0.18, 0.32, 0.25, 0.15, 0.10])]
    users = pd.DataFrame(
        {
            C.USER_ID: [f"u{u:05d}" for u in range(n_users)],
            C.SEGMENT: segment,
            C.DEVICE: device,
            C.AGE_BAND: age,
            "signup_at": pd.to_datetime(np.round(signup), unit="s", utc=True),
        }
    )
    hidden = {
        "cat_pref": cat_pref, "style_pref": style_pref, "price_level": price_level,
        "price_sensitivity": price_sensitivity, "novelty": novelty, "activity": activity, "signup": signup,
    }  # fmt: skip
    return users, hidden


SHELF_GLANCE = 512
"""A view weighs at most this many items of its shelf: every item of a smaller shelf, a random page of a larger
one (a shopper never scans thousands of items). Keeps the generator linear in views: 20 k demo shelves hold at most
~400 items, so the demo catalogue is the same as when every view weighed its whole shelf."""
VIEWS_PER_PAGE = 16
"""Views that see the same random page of a larger shelf: drawing and gathering a page costs more than scoring it,
so a page is drawn once for a few views (each still has its own taste, time and noise)."""
CELLS_PER_BLOCK = 250_000
"""Views × items scored at once (2 MB per array, which stays in cache: faster than larger blocks): bounds the
generator's memory at any catalogue size."""


def _sample_views(
    rng: np.random.Generator, item: dict[str, np.ndarray], user: dict[str, np.ndarray], n_views: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, time) of each view: taste picks a (category, style) shelf, then utility picks the item."""
    n_users = len(user["activity"])
    viewer = rng.choice(n_users, size=n_views, p=user["activity"] / user["activity"].sum())
    start = DEMO_END.value / 1e9 - HISTORY_DAYS * DAY
    lo = np.maximum(user["signup"][viewer], start)
    when = rng.uniform(lo, DEMO_END.value / 1e9)
    n_style = user["style_pref"].shape[1]
    shelf_pref = (user["cat_pref"][:, :, None] * user["style_pref"][:, None, :]).reshape(n_users, -1)
    draw = rng.random(n_views)
    shelf = np.empty(n_views, dtype=np.int64)
    for block in _blocks(n_views, shelf_pref.shape[1]):
        cumulative = np.cumsum(shelf_pref[viewer[block]], axis=1)
        shelf[block] = (cumulative < draw[block, None] * cumulative[:, -1:]).sum(axis=1)

    item_shelf = item["category"] * n_style + item["style"]
    chosen = np.full(n_views, -1)
    for s in np.unique(shelf):
        views = np.flatnonzero(shelf == s)
        members = np.flatnonzero(item_shelf == s)
        if len(members) == 0:
            continue
        for block in _blocks(len(views), min(len(members), SHELF_GLANCE)):
            chosen[views[block]] = _pick(rng, item, user, viewer[views[block]], when[views[block]], members)
    keep = chosen >= 0
    return viewer[keep], chosen[keep], when[keep]


def _blocks(n_rows: int, row_cells: int) -> list[slice]:
    step = max(1, CELLS_PER_BLOCK // max(row_cells, 1))
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def _pick(
    rng: np.random.Generator, item: dict[str, np.ndarray], user: dict[str, np.ndarray], u: np.ndarray,
    when: np.ndarray, members: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """The item each view picks (-1: nothing launched yet), with probability softmax(utility) among the shelf's
    items, or among a random page of ``SHELF_GLANCE`` of them on a larger shelf."""
    if len(members) <= SHELF_GLANCE:
        pages, page_of = members[None, :], np.zeros(len(u), dtype=np.int64)
    else:
        n_pages = -(-len(u) // VIEWS_PER_PAGE)
        pages = members[rng.integers(0, len(members), size=(n_pages, SHELF_GLANCE))]
        page_of = np.arange(len(u)) // VIEWS_PER_PAGE
    age_days = (when[:, None] - item["created"][pages][page_of]) / DAY
    price_gap = item["price_z"][pages][page_of] - user["price_level"][u, None]
    utility = (
        0.9 * item["quality"][pages][page_of]
        + (0.8 + 3.0 * user["novelty"][u, None]) * np.exp(-np.clip(age_days, 0, None) / 30.0)
        - 0.15 * price_gap**2
    )
    utility[age_days < 0] = -np.inf
    best = _gumbel_max(rng, utility) if len(members) <= SHELF_GLANCE else _softmax_draw(rng, utility)
    picked = pages[page_of, np.maximum(best, 0)]
    return np.where(best >= 0, picked, -1)


def _gumbel_max(rng: np.random.Generator, utility: np.ndarray) -> np.ndarray:
    """A softmax draw per row by the Gumbel-max trick (-1 where every utility is -inf): how the demo catalogue was
    always drawn, so its tables stay as they were."""
    noisy = utility + rng.gumbel(size=utility.shape)
    best = noisy.argmax(axis=1)
    return np.where(np.isfinite(noisy[np.arange(len(noisy)), best]), best, -1)


def _softmax_draw(rng: np.random.Generator, utility: np.ndarray) -> np.ndarray:
    """The same distribution as ``_gumbel_max`` from one uniform per row instead of a Gumbel per cell (two
    logarithms each: most of the generator's time on large catalogues)."""
    top = utility.max(axis=1, keepdims=True)
    launched = np.isfinite(top[:, 0])
    weights = np.exp(utility - np.where(np.isfinite(top), top, 0.0))
    cumulative = np.cumsum(weights, axis=1)
    threshold = (1.0 - rng.random(len(utility))) * cumulative[:, -1]  # in (0, total]: never a zero-weight item
    best = np.minimum((cumulative < threshold[:, None]).sum(axis=1), utility.shape[1] - 1)
    return np.where(launched, best, -1)


def _funnel(
    item: dict[str, np.ndarray], user: dict[str, np.ndarray], viewer: np.ndarray, chosen: np.ndarray, when: np.ndarray
) -> dict[str, np.ndarray]:
    """Probabilities of click | view, cart | click and purchase | cart for each view."""
    n_style = user["style_pref"].shape[1]
    style_match = np.log(user["style_pref"][viewer, item["style"][chosen]] * n_style)
    gap = item["price_z"][chosen] - user["price_level"][viewer]
    sensitivity = user["price_sensitivity"][viewer]
    fresh = np.exp(-np.clip(when - item["created"][chosen], 0, None) / DAY / 30.0)
    return {
        "click": _sigmoid(-0.8 + 0.5 * style_match + 0.4 * item["quality"][chosen] + user["novelty"][viewer] * fresh),
        "cart": _sigmoid(0.2 - sensitivity * np.abs(gap) - 0.5 * np.clip(gap, 0, None)),
        "purchase": _sigmoid(1.2 - 0.6 * sensitivity * np.clip(gap, 0, None))
        * in_stock_at(item["stockout"][chosen], item["restock"][chosen], when),
    }


@dataclass(frozen=True)
class DemoWorld:
    """The demo dataset with the hidden traits it was generated from: what an event simulation needs to answer
    'would this user click, add to cart, buy what was shown?' the way the log's users did."""

    dataset: Dataset
    item: dict[str, np.ndarray]
    user: dict[str, np.ndarray]
    """Hidden traits, aligned with ``item_order`` / ``user_order`` (the generated order)."""
    item_order: pd.Index
    user_order: pd.Index

    def response_probabilities(self, user_ids: np.ndarray, item_ids: np.ndarray, when: float) -> dict[str, np.ndarray]:
        """Per shown (user, item): P(click | looked at it), P(cart | click), P(purchase | cart) at ``when``. The
        generated log's funnel, with the click scaled by the user's taste for the item's category (in the log,
        taste decided which items a user viewed at all)."""
        u = self.user_order.get_indexer(user_ids)
        i = self.item_order.get_indexer(item_ids)
        if (u < 0).any() or (i < 0).any():
            raise KeyError("users and items must be the demo's own")
        prob = _funnel(self.item, self.user, u, i, np.full(len(u), when))
        taste = self.user["cat_pref"][u, self.item["category"][i]] * len(CATEGORIES)
        prob["click"] = prob["click"] * np.minimum(1.0, taste)
        return prob


def generate_demo_catalog(
    n_items: int = 20_000, n_users: int = 5_000, n_interactions: int = 300_000, seed: int = 42
) -> Dataset:
    """Generate and validate the demo dataset; the same arguments always give the same tables."""
    return generate_demo_world(n_items, n_users, n_interactions, seed).dataset


def generate_demo_world(
    n_items: int = 20_000, n_users: int = 5_000, n_interactions: int = 300_000, seed: int = 42
) -> DemoWorld:
    """The demo dataset and its hidden traits."""
    if min(n_items, n_users, n_interactions) <= 0:
        raise ValueError("n_items, n_users and n_interactions must be positive")
    rng = np.random.default_rng(seed)
    items, item_hidden = _make_items(rng, n_items)
    users, user_hidden = _make_users(rng, n_users)
    viewer, chosen, when = _sample_views(rng, item_hidden, user_hidden, n_interactions)
    prob = _funnel(item_hidden, user_hidden, viewer, chosen, when)
    expected_rows = 1 + prob["click"] * (1 + prob["cart"] * (1 + prob["purchase"]))
    n_kept = int(np.searchsorted(np.cumsum(expected_rows), n_interactions))
    viewer, chosen, when = viewer[:n_kept], chosen[:n_kept], when[:n_kept]
    prob = {k: v[:n_kept] for k, v in prob.items()}

    clicked = rng.random(n_kept) < prob["click"]
    carted = clicked & (rng.random(n_kept) < prob["cart"])
    bought = carted & (rng.random(n_kept) < prob["purchase"])
    delays = np.cumsum(rng.exponential(90.0, size=(n_kept, 3)), axis=1)
    end = DEMO_END.value / 1e9
    frames = []
    for event, mask, offset in (
        (C.VIEW, np.ones(n_kept, bool), np.zeros(n_kept)),
        (C.CLICK, clicked, delays[:, 0]),
        (C.ADD_TO_CART, carted, delays[:, 1]),
        (C.PURCHASE, bought, delays[:, 2]),
    ):
        seconds = np.minimum(when[mask] + offset[mask], end)
        frames.append(
            pd.DataFrame(
                {
                    C.USER_ID: users[C.USER_ID].to_numpy()[viewer[mask]],
                    C.ITEM_ID: items[C.ITEM_ID].to_numpy()[chosen[mask]],
                    C.TIMESTAMP: pd.to_datetime(np.round(seconds), unit="s", utc=True),
                    C.EVENT_TYPE: event,
                }
            )
        )
    interactions = pd.concat(frames, ignore_index=True)
    dataset = validate_dataset("demo", items, interactions, users=users, now=DEMO_END)
    return DemoWorld(dataset, item_hidden, user_hidden, pd.Index(items[C.ITEM_ID]), pd.Index(users[C.USER_ID]))
