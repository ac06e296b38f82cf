"""Each candidate source on tiny data, and the merge's quotas and provenance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.data import columns as C
from models.data.clock import DAY_SECONDS
from models.retrieval.als import CollaborativeModel, mips_item_vectors
from models.retrieval.fusion import fuse, merge, scale_quotas
from models.retrieval.indexes import VectorIndex
from models.retrieval.item_item import ItemItemSource, fit_item_item
from models.retrieval.matrices import interaction_matrix
from models.retrieval.popularity import DecayedPopularity
from models.retrieval.sources import (
    CollaborativeSource,
    FreshSource,
    PopularSource,
    SemanticSource,
    SourceResult,
    UserQuery,
    in_sorted,
    leading_rows,
)

DAY0 = 20_000 * DAY_SECONDS  # a whole day in unix seconds
NAMES = np.array(["a", "b", "c", "d"])


def events(rows: list[tuple[str, int]]) -> pd.DataFrame:
    """(item, day) rows → interactions."""
    return pd.DataFrame(
        {
            C.USER_ID: "u",
            C.ITEM_ID: [item for item, _ in rows],
            C.TIMESTAMP: pd.to_datetime([DAY0 + day * DAY_SECONDS + 60 for _, day in rows], unit="s", utc=True),
        }
    )


def test_decayed_popularity_counts_only_earlier_days_and_decays():
    log = events([("a", 0), ("a", 0), ("b", 5), ("c", 9)])
    popularity = DecayedPopularity(log, ["a", "b", "c"], half_life_days=5.0)
    on_day_10 = popularity.scores_at(DAY0 + 10 * DAY_SECONDS + 3600)
    np.testing.assert_allclose(on_day_10, [2 * 0.5**2, 0.5**1, 0.5**0.2])
    # the same day's events are not visible yet
    assert popularity.scores_at(DAY0 + 9 * DAY_SECONDS + 7200)[2] == 0.0
    # computing an earlier day after a later one gives the same answer as a fresh instance
    fresh = DecayedPopularity(log, ["a", "b", "c"], half_life_days=5.0)
    np.testing.assert_allclose(popularity.scores_at(DAY0 + 6 * DAY_SECONDS), fresh.scores_at(DAY0 + 6 * DAY_SECONDS))


def test_decayed_popularity_keeps_weekly_checkpoints_whatever_the_query_order():
    """Every day of a 200-day log, asked in a random order, equals the direct sum; only one array per
    checkpoint week is kept (the cache held one per distinct day asked: 5.8 GB at 1 M items over a year)."""
    rng = np.random.default_rng(7)
    days = rng.integers(0, 200, size=600)
    items = rng.choice(["a", "b", "c"], size=600)
    popularity = DecayedPopularity(events(list(zip(items, days.tolist(), strict=True))), ["a", "b", "c"], 10.0)
    for day in rng.permutation(210):
        before = days < day
        expected = [np.sum(0.5 ** ((day - days[before & (items == item)]) / 10.0)) for item in "abc"]
        np.testing.assert_allclose(popularity.scores_at(DAY0 + day * DAY_SECONDS), expected, rtol=1e-9)
    assert len(popularity._checkpoints) <= 210 // DecayedPopularity.CHECKPOINT_DAYS + 1


def test_popular_source_ranks_and_excludes():
    log = events([("a", 0), ("b", 1), ("b", 1), ("c", 1), ("c", 1), ("c", 1)])
    source = PopularSource("popular_long", DecayedPopularity(log, ["a", "b", "c", "d"], half_life_days=30.0))
    result = source.retrieve(UserQuery("u", as_of=DAY0 + 3 * DAY_SECONDS, exclude_rows=np.array([1])), k=5)
    assert NAMES[result.rows].tolist() == ["c", "a"]  # d never seen, b excluded
    assert result.source == "popular_long"


def test_fresh_source_keeps_the_window():
    created = np.array([DAY0 - 100 * DAY_SECONDS, DAY0 - 3 * DAY_SECONDS, DAY0 - 1 * DAY_SECONDS, DAY0 + DAY_SECONDS])
    log = events([("old", -50), ("mid", -2), ("mid", -2)])
    popularity = DecayedPopularity(log, ["old", "mid", "new", "future"], half_life_days=7.0)
    source = FreshSource(["old", "mid", "new", "future"], created, popularity, window_days=30.0)
    result = source.retrieve(UserQuery("u", as_of=DAY0), k=10)
    assert result.rows.tolist() == [1, 2]  # mid (popular) first, then new; the future item does not exist yet


def unit(rows: list[list[float]]) -> np.ndarray:
    vectors = np.array(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_semantic_source_follows_recent_history():
    item_ids = np.array(["x1", "x2", "x3", "y1", "y2", "y3"])
    vectors = unit([[1, 0.1], [1, 0.2], [1, 0.0], [0.1, 1], [0.2, 1], [0.0, 1]])
    source = SemanticSource(VectorIndex.build(vectors, item_ids), vectors, half_life_days=1.0)
    # old x history, recent y history: the recent taste wins
    query = UserQuery(
        "u", as_of=DAY0, history_items=["x1", "y1"], history_times=[DAY0 - 20 * DAY_SECONDS, DAY0],
        exclude_rows=np.array([0, 3]),
    )  # fmt: skip
    found = item_ids[source.retrieve(query, k=3).rows]
    assert set(found) == {"y2", "y3", "x2"} and found[0] in {"y2", "y3"}
    # a search text vector overrides the history
    result = source.retrieve(UserQuery(None, as_of=DAY0, text_vector=vectors[0]), k=1)
    assert item_ids[result.rows].tolist() == ["x1"]
    assert len(source.retrieve(UserQuery(None, as_of=DAY0), k=3)) == 0


def test_collaborative_source_uses_user_vector_or_fold_in():
    item_ids = np.array(["a", "b", "c"])
    item_factors = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)
    model = CollaborativeModel(item_ids, item_factors, np.array(["u"]), np.array([[0.0, 2.0]], np.float32), 0.1, 1.0)
    lifted, _ = mips_item_vectors(item_factors)
    source = CollaborativeSource(VectorIndex.build(lifted, item_ids), model)
    assert item_ids[source.retrieve(UserQuery("u", as_of=DAY0), k=3).rows].tolist() == ["b", "c", "a"]
    folded = source.retrieve(UserQuery("new", as_of=DAY0, history_items=["a"], exclude_rows=np.array([0])), k=3)
    assert item_ids[folded.rows].tolist() == ["c", "b"]
    assert len(source.retrieve(UserQuery("new", as_of=DAY0), k=3)) == 0


LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def result(source: str, items: str) -> SourceResult:
    """A source's ranked list written as letters; rows are the letters' positions in the alphabet."""
    rows = np.array([ord(letter) - ord("a") for letter in items], dtype=np.int64)
    return SourceResult(source, rows, np.linspace(1.0, 0.5, len(rows)).astype(np.float32))


def test_merge_respects_quotas_and_dedupes():
    merged = merge([result("s1", "abcdef"), result("s2", "bxyz")], {"s1": 2, "s2": 2}, k=4, catalogue=LETTERS)
    assert merged.item_ids.tolist() == ["a", "b", "x", "y"]
    assert merged.primary_source.tolist() == ["s1", "s1", "s2", "s2"]


def test_merge_keeps_provenance_from_every_source():
    merged = merge([result("s1", "abc"), result("s2", "cb")], {"s1": 1, "s2": 2}, k=3, catalogue=LETTERS)
    assert merged.item_ids.tolist() == ["a", "c", "b"]
    assert merged.provenance(1) == {"s1": {"rank": 2, "score": pytest.approx(0.5)}, "s2": {"rank": 0, "score": 1.0}}
    assert merged.provenance(0) == {"s1": {"rank": 0, "score": 1.0}}
    assert merged.ranks["s2"].tolist() == [-1, 0, 1]


def test_merge_fills_from_leftovers_when_a_source_runs_dry():
    merged = merge([result("s1", "abcdef"), result("s2", "x")], {"s1": 2, "s2": 3}, k=5, catalogue=LETTERS)
    assert merged.item_ids.tolist() == ["a", "b", "x", "c", "d"]


def test_scale_quotas():
    assert scale_quotas({"a": 0.5, "b": 0.3, "c": 0.2}, 10) == {"a": 5, "b": 3, "c": 2}
    quotas = scale_quotas({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 100)
    assert sum(quotas.values()) == 100 and max(quotas.values()) - min(quotas.values()) <= 1


def test_fuse_orders_by_weighted_reciprocal_rank():
    a = result("a", "xyz")
    b = result("b", "zyw")
    merged = fuse([a, b], k=4, weights={"a": 1.0, "b": 1.0}, rrf_k=1.0, catalogue=LETTERS)
    # scores with rrf_k=1: x 1/1, y 1/2+1/2, z 1/3+1/1, w 1/3
    assert merged.item_ids.tolist() == ["z", "x", "y", "w"]
    assert merged.primary_source.tolist() == ["b", "a", "a", "b"]
    assert merged.ranks["a"].tolist() == [2, 0, 1, -1]


def test_fuse_reserves_slots_for_weak_sources():
    strong = result("strong", "abcdef")
    weak = result("weak", "uv")
    merged = fuse([strong, weak], k=4, weights={"strong": 1.0, "weak": 0.01}, reserved={"weak": 1}, catalogue=LETTERS)
    assert "u" in merged.item_ids and "v" not in merged.item_ids and len(merged) == 4


def test_item_item_source_walks_from_the_most_recent_items():
    import scipy.sparse as sp

    item_ids = np.array(["a", "b", "c", "d"])
    table = sp.csr_matrix(np.array([[0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1.0], [0, 0, 0, 0]]))
    recent = ItemItemSource("ease_recent", table, history=1, decay=1.0)
    # c is the most recent item (seen rows are most recent first): only its neighbour d is reached
    query = UserQuery("u", as_of=DAY0, seen_rows=np.array([2, 0]), exclude_rows=np.array([0, 2]))
    assert item_ids[recent.retrieve(query, k=5).rows].tolist() == ["d"]
    decayed = ItemItemSource("sequence", table, history=2, decay=0.5)
    found = decayed.retrieve(query, k=5)
    assert item_ids[found.rows].tolist() == ["d", "b"] and found.scores.tolist() == [1.0, 0.5]
    assert len(recent.retrieve(UserQuery("u", as_of=DAY0), k=5)) == 0


def test_rp3beta_links_items_shared_by_users():
    log = pd.DataFrame(
        {
            C.USER_ID: ["u1", "u1", "u2", "u2", "u3"],
            C.ITEM_ID: ["a", "b", "a", "b", "c"],
            C.TIMESTAMP: pd.Timestamp("2025-01-01", tz="UTC"),
        }
    )
    matrix = interaction_matrix(log, ["u1", "u2", "u3"], ["a", "b", "c"])
    table = fit_item_item("rp3beta", matrix, {"alpha": 1.0, "beta": 0.5}, max_items=10).table(2).toarray()
    assert table[0, 1] > 0 and table[1, 0] > 0  # a and b co-occur
    assert table[0, 2] == 0 and table[2, 0] == 0  # c shares no user with them
    assert np.all(np.diag(table) == 0)


def test_in_sorted_is_isin_for_an_ascending_array():
    rng = np.random.default_rng(3)
    for size in (0, 1, 7, 300):
        values = rng.integers(-1, 500, size=1000)
        members = np.unique(rng.integers(0, 500, size=size))
        np.testing.assert_array_equal(in_sorted(values, members), np.isin(values, members))


def test_popular_orders_stay_right_over_more_days_than_the_cache_holds():
    log = events([(item, day) for day in range(0, 40, 3) for item in NAMES[: 1 + day % 4]])
    source = PopularSource("popular_short", DecayedPopularity(log, NAMES.tolist(), half_life_days=7.0))
    source._cache_days = 8  # a small cache, so most days below are computed after being evicted
    days = [*range(1, 40), *range(39, 0, -2)]
    for day in days:
        got = source.retrieve(UserQuery("u", as_of=DAY0 + day * DAY_SECONDS), k=4)
        fresh = PopularSource("p", DecayedPopularity(log, NAMES.tolist(), half_life_days=7.0))
        expected = fresh.retrieve(UserQuery("u", as_of=DAY0 + day * DAY_SECONDS), k=4)
        np.testing.assert_array_equal(got.rows, expected.rows)
        assert len(source._order) <= 8


def full_order(scores: np.ndarray) -> np.ndarray:
    """What the popular sources returned before: every score sorted (stably), then the positive ones."""
    order = np.argsort(-scores, kind="stable")
    return order[scores[order] > 0]


def test_leading_rows_are_the_prefix_of_the_full_sort_ties_and_zeros_included():
    rng = np.random.default_rng(4)
    for size in (0, 1, 50, 5000):
        scores = rng.integers(0, 6, size=size).astype(np.float64) / 2  # many ties, a sixth of them zero
        for count in (0, 1, 7, 100, size, size + 3):
            np.testing.assert_array_equal(leading_rows(scores, count), full_order(scores)[:count])


def test_popular_order_grows_with_longer_requests_on_a_cached_day():
    rng = np.random.default_rng(5)
    picks = zip(rng.choice(NAMES, 400), rng.integers(0, 30, 400), strict=True)
    log = events([(str(item), int(day)) for item, day in picks])
    popularity = DecayedPopularity(log, NAMES.tolist(), half_life_days=7.0)
    source = PopularSource("popular_short", popularity)
    as_of = DAY0 + 31 * DAY_SECONDS
    expected = full_order(popularity.scores_at(as_of))
    for count in (2, 3, 9, 5, len(NAMES) + 4, 1):  # the day's rows are cached, then extended
        np.testing.assert_array_equal(source.order_on(as_of, count), expected[:count])
    assert len(source._order) == 1


def test_item_item_scores_read_from_the_csr_arrays_equal_the_matrix_product():
    import scipy.sparse as sp

    table = sp.random(300, 300, density=0.05, format="csr", random_state=np.random.default_rng(8))
    source = ItemItemSource("ease", table, history=50, decay=0.9)
    rows = np.array([5, 17, 5, 299, 0])  # repeated rows add up, as in the product
    weights = np.power(0.9, np.arange(len(rows)))
    expected = (sp.csr_matrix((weights, (np.zeros(len(rows)), rows)), shape=(1, 300)) @ table).toarray().ravel()
    reached, scores = source.scores(rows, weights)
    np.testing.assert_array_equal(reached, np.flatnonzero(table[np.unique(rows)].sum(axis=0).A1 != 0))
    full = np.zeros(300)
    full[reached] = scores
    np.testing.assert_allclose(full, expected, rtol=1e-12)


def test_item_item_top_items_are_those_of_the_full_catalogue_scores():
    """Scoring only the reached items returns exactly what scoring every catalogue item did (same items, order and
    ties: the partition sees the same scores in the same order)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    table = sp.random(2000, 2000, density=0.01, format="csr", random_state=rng)
    table.data = np.round(table.data * 4) / 4  # many ties
    source = ItemItemSource("ease", table, history=20, decay=0.8)
    for _ in range(20):
        seen = rng.choice(2000, size=int(rng.integers(1, 30)), replace=False)
        exclude = np.sort(rng.choice(2000, size=5, replace=False))
        result = source.retrieve(UserQuery("u", as_of=DAY0, seen_rows=seen, exclude_rows=exclude), k=25)
        weights = np.power(0.8, np.arange(len(seen[:20])))
        dense = sp.csr_matrix((weights, (np.zeros(len(seen[:20])), seen[:20])), shape=(1, 2000)) @ table
        dense = dense.toarray().ravel()
        found = np.flatnonzero(dense > 0)
        wanted = min(30, len(found))
        top = found[np.argpartition(-dense[found], wanted - 1)[:wanted]]
        top = top[np.argsort(-dense[top], kind="stable")]
        expected = top[~np.isin(top, exclude)][:25]
        np.testing.assert_array_equal(result.rows, expected)
        np.testing.assert_allclose(result.scores, dense[expected].astype(np.float32), rtol=1e-6)


def test_fresh_source_window_found_by_launch_order_equals_a_scan_of_the_catalogue():
    rng = np.random.default_rng(4)
    created = np.round(DAY0 + rng.uniform(-90, 5, size=3000) * DAY_SECONDS)
    created[::50] = DAY0 - 10 * DAY_SECONDS  # launches at the same second
    ids = [f"i{r}" for r in range(3000)]
    popularity = DecayedPopularity(events([("i1", -3)]), ids, half_life_days=7.0)
    source = FreshSource(ids, created, popularity, window_days=30.0)
    for as_of in [DAY0 - 100 * DAY_SECONDS, DAY0 - 10 * DAY_SECONDS, DAY0, DAY0 + 0.5 * DAY_SECONDS, *created[:5]]:
        scan = np.flatnonzero((created <= as_of) & (created > as_of - 30 * DAY_SECONDS))
        np.testing.assert_array_equal(source.launched_within(as_of - 30 * DAY_SECONDS, as_of), scan)


def test_a_snapshot_scores_a_few_rows_as_it_scores_the_catalogue():
    log = events([("a", 0), ("b", 1), ("b", 2), ("c", 2)])
    snapshot = DecayedPopularity(log, NAMES.tolist(), half_life_days=7.0).snapshot(DAY0 + 3 * DAY_SECONDS)
    rows = np.array([2, 0, 3])
    for as_of in (DAY0, DAY0 + 3 * DAY_SECONDS, DAY0 + 20.5 * DAY_SECONDS):
        np.testing.assert_array_equal(snapshot.scores_of(as_of, rows), snapshot.scores_at(as_of)[rows])


def test_fresh_source_ranks_the_window_as_a_full_sort_does_with_ties_at_the_cut():
    rng = np.random.default_rng(5)
    created = np.round(DAY0 - rng.uniform(0, 29, size=2000) * DAY_SECONDS)
    created[::7] = DAY0 - 3 * DAY_SECONDS  # launches at the same second
    ids = [f"i{r}" for r in range(2000)]
    log = events([(f"i{r}", -float(rng.integers(1, 3))) for r in rng.integers(0, 300, size=900)])
    source = FreshSource(ids, created, DecayedPopularity(log, ids, half_life_days=7.0), window_days=30.0)
    for k, exclude in [(10, []), (40, [3, 5, 8]), (3000, [1])]:
        query = UserQuery("u", as_of=DAY0, exclude_rows=np.array(exclude, dtype=np.int64))
        result = source.retrieve(query, k)
        eligible = source.launched_within(DAY0 - 30 * DAY_SECONDS, DAY0)
        popularity = source.popularity.scores_of(DAY0, eligible)
        full = eligible[np.lexsort((-created[eligible], -popularity))]
        np.testing.assert_array_equal(result.rows, full[~np.isin(full, exclude)][:k])


def test_fresh_source_cached_per_day_ranks_each_request_window_as_a_full_sort_does():
    """Requests at different seconds of the same days share the day's order, yet each gets exactly its own window:
    launches later that day, or just out of the window, never show; longer requests extend the day's order."""
    rng = np.random.default_rng(7)
    created = np.round(DAY0 + rng.uniform(-40, 3, size=4000) * DAY_SECONDS)
    created[::9] = DAY0 - 20 * DAY_SECONDS  # launches at the same second
    ids = [f"i{r}" for r in range(4000)]
    log = events([(f"i{r}", -float(rng.integers(0, 30))) for r in rng.integers(0, 4000, size=3000)])
    popularity = DecayedPopularity(log, ids, half_life_days=7.0)
    source = FreshSource(ids, created, popularity, window_days=10.0)
    window = 10.0 * DAY_SECONDS
    times = DAY0 + rng.choice([-1.0, 0.0, 1.0, 2.0], size=60) * DAY_SECONDS + rng.uniform(0, DAY_SECONDS, size=60)
    times[:3] = created[:3]  # a request at a launch's exact second
    for as_of, k in zip(times, rng.choice([1, 5, 30, 200, 5000], size=60), strict=True):
        exclude = np.sort(rng.choice(4000, size=int(rng.integers(0, 4)), replace=False))
        result = source.retrieve(UserQuery("u", as_of=float(as_of), exclude_rows=exclude), int(k))
        eligible = np.flatnonzero((created <= as_of) & (created > as_of - window))
        scores = popularity.scores_of(float(as_of), eligible)
        full = eligible[np.lexsort((-created[eligible], -scores))]
        expected = full[~np.isin(full, exclude)][:k]
        np.testing.assert_array_equal(result.rows, expected)
        np.testing.assert_allclose(result.scores, (1.0 - (as_of - created[expected]) / window).astype(np.float32))
    assert len(source._order) == len(np.unique(np.floor(times / DAY_SECONDS)))  # one order per day asked


def test_item_item_scores_are_the_same_across_calls_threads_and_catalogue_sizes():
    """The per-thread work arrays are left zero after every call, whichever source and thread used them."""
    from concurrent.futures import ThreadPoolExecutor

    import scipy.sparse as sp

    rng = np.random.default_rng(6)
    sources = [ItemItemSource(f"s{n}", sp.random(n, n, density=0.02, format="csr", random_state=rng), 30, 0.9)
               for n in (300, 3000)]  # fmt: skip
    calls = [(source, rng.choice(source.n_items, size=20, replace=False)) for _ in range(30) for source in sources]

    def dense(source: ItemItemSource, rows: np.ndarray) -> np.ndarray:
        weights = np.power(0.9, np.arange(len(rows)))
        return (
            (sp.csr_matrix((weights, (np.zeros(len(rows)), rows)), shape=(1, source.n_items)) @ source.table)
            .toarray()
            .ravel()
        )

    def scored(call: tuple[ItemItemSource, np.ndarray]) -> np.ndarray:
        source, rows = call
        reached, scores = source.scores(rows, np.power(0.9, np.arange(len(rows))))
        full = np.zeros(source.n_items)
        full[reached] = scores
        return full

    with ThreadPoolExecutor(max_workers=3) as pool:
        for call, full in zip(calls, pool.map(scored, calls), strict=True):
            np.testing.assert_allclose(full, dense(*call), rtol=1e-12)
