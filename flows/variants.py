"""Champion vs challenger from what was served: how each variant's lists fared, and how far the shadow agrees.

Reads the impression log (lists users saw: ``champion`` or ``challenger``; lists scored beside them: ``shadow``) and
the live log's events, credits events to lists with the training code's own attribution (``impression_labels``), and
reports per variant the share of lists with a click (CTR) and with a purchase (conversion) with Wilson intervals, the
challenger/champion ratios with a bootstrap interval over users, latency percentiles, and how much the shadow lists
agree with the champion lists they were scored beside (overlap@k, Kendall tau, latency ratio).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy import stats

from models.data import columns as C
from models.live.impressions import PARTITION_PREFIX, SCHEMA, SHADOW, impressions_dir
from models.live.ingest import read_live_log
from models.live.log import EVENT
from models.settings import Settings
from models.training.impressions import REQUEST_ID, impression_labels
from models.training.training_set import EVENT_GRADES

CHAMPION = "champion"
CHALLENGER = "challenger"
SEEN = (CHAMPION, CHALLENGER)
"""Variants whose lists users saw: only these can earn clicks."""
LIST_COLUMNS = [REQUEST_ID, "as_of", C.USER_ID, "version", "endpoint", "variant", "latency_ms", "rank", C.ITEM_ID]
COMPARED_ENDPOINT = "recommend"
"""Only /recommend lists go to a challenger: /search and /similar lists would dilute the champion's arm."""
EVENT_COLUMNS = [C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TIMESTAMP]
CLICK_GRADE = 1
PURCHASE_GRADE = EVENT_GRADES[C.PURCHASE]
RESAMPLES = 2000
"""Bootstrap resamples: enough for a 95 % percentile interval, cheap on a million users."""


def compare_variants(
    shown: pd.DataFrame, shadow: pd.DataFrame, events: pd.DataFrame, window_seconds: float, k: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Per-variant lists, users, latency and outcomes, the challenger/champion ratios, and the shadow agreement.

    ``shown``/``shadow``: impression rows (one per shown item); ``events``: user_id, item_id, event_type,
    timestamp (unix s), optionally request_id. Rates and statistics without data are None, never a crash."""
    seen = shown[shown["variant"].isin(SEEN)] if not shown.empty else shown
    lists = list_outcomes(seen, events, window_seconds)
    arms = {name: lists[lists["variant"] == name] for name in SEEN}
    variants = {name: variant_summary(arm) for name, arm in arms.items()}
    variants[SHADOW] = variant_summary(_lists(shadow), outcomes=False)
    ratios = None
    if all(len(arm) for arm in arms.values()):
        ratios = {
            name: rate_ratio(arms[CHALLENGER], arms[CHAMPION], outcome, seed)
            for name, outcome in (("ctr", "clicked"), ("conversion", "purchased"))
        }
    champion_rows = seen[seen["variant"] == CHAMPION] if not seen.empty else seen
    return {
        "k": k,
        "window_seconds": window_seconds,
        "variants": variants,
        "challenger_vs_champion": ratios,
        "shadow_agreement": shadow_agreement(champion_rows, shadow, k),
    }


def list_outcomes(shown: pd.DataFrame, events: pd.DataFrame, window_seconds: float) -> pd.DataFrame:
    """One row per shown list: request_id, variant, user_id, latency_ms, clicked, purchased (no events: 0)."""
    lists = _lists(shown)
    if lists.empty:
        return lists.assign(clicked=pd.Series(dtype=bool), purchased=pd.Series(dtype=bool))
    grades = pd.Series(0, index=shown.index)
    if not events.empty and set(EVENT_COLUMNS) <= set(events.columns):
        typed = events.astype({C.USER_ID: str, C.ITEM_ID: str, C.TIMESTAMP: float})
        grades = impression_labels(shown, typed, window_seconds)
    best = grades.groupby(shown[REQUEST_ID]).max().reindex(lists[REQUEST_ID]).fillna(0).to_numpy()
    return lists.assign(clicked=best >= CLICK_GRADE, purchased=best >= PURCHASE_GRADE)


def _lists(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per request id: its variant, user and latency (an anonymous list is its own user)."""
    columns = [REQUEST_ID, "variant", C.USER_ID, "latency_ms"]
    if rows.empty:
        return pd.DataFrame({name: pd.Series(dtype=object if name != "latency_ms" else float) for name in columns})
    lists = rows.groupby(REQUEST_ID, sort=False).first().reset_index()[columns]
    return lists.assign(user_id=lists[C.USER_ID].where(lists[C.USER_ID].notna(), "request:" + lists[REQUEST_ID]))


def variant_summary(lists: pd.DataFrame, outcomes: bool = True) -> dict[str, Any]:
    """Lists, users, latency p50/p99 (ms) and, for lists users saw, CTR and conversion with Wilson 95 % intervals."""
    latency = lists["latency_ms"].astype(float).to_numpy()
    latency = latency[np.isfinite(latency)]
    summary: dict[str, Any] = {
        "lists": len(lists),
        "users": int(lists[C.USER_ID].nunique()),
        "latency_ms": {
            "p50": float(np.percentile(latency, 50)) if latency.size else None,
            "p99": float(np.percentile(latency, 99)) if latency.size else None,
        },
    }
    if outcomes:
        summary["ctr"] = wilson_rate(int(lists["clicked"].sum()), len(lists))
        summary["conversion"] = wilson_rate(int(lists["purchased"].sum()), len(lists))
    return summary


def wilson_rate(successes: int, trials: int) -> dict[str, Any]:
    """The share and its Wilson 95 % interval (sound near 0 and 1, where the normal one leaves [0, 1])."""
    if trials == 0:
        return {"rate": None, "successes": 0, "ci95": None}
    interval = stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    return {"rate": successes / trials, "successes": successes, "ci95": [float(interval.low), float(interval.high)]}


def rate_ratio(challenger: pd.DataFrame, champion: pd.DataFrame, outcome: str, seed: int) -> dict[str, Any]:
    """Challenger rate / champion rate of ``outcome`` with a 95 % percentile bootstrap interval resampling users.

    A user's lists are not independent, so users are resampled, each arm on its own (a split gives each user one
    arm). The ratio is None when the champion's rate is 0 (undefined); an interval end is None where resamples made
    it infinite or undefined (the champion had no success in them). Percentile, not BCa: BCa's jackknife costs one
    statistic per user."""
    arms = [_per_user(challenger, outcome), _per_user(champion, outcome)]
    (hits_a, lists_a), (hits_b, lists_b) = arms
    ratio = _ratio(hits_a.sum(), lists_a.sum(), hits_b.sum(), lists_b.sum())
    if ratio is None or min(len(hits_a), len(hits_b)) < 2:
        return {"ratio": ratio, "ci95": None}

    def statistic(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        rate_a = hits_a[a].sum(axis=axis) / lists_a[a].sum(axis=axis)
        rate_b = hits_b[b].sum(axis=axis) / lists_b[b].sum(axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(rate_a / rate_b)

    with np.errstate(invalid="ignore"):  # infinite resamples make the standard error NaN, not the interval
        result = stats.bootstrap(
            (np.arange(len(hits_a)), np.arange(len(hits_b))), statistic, n_resamples=RESAMPLES, method="percentile",
            vectorized=True, paired=False, batch=100, random_state=np.random.default_rng(seed),
        )  # fmt: skip
    ends = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
    return {"ratio": ratio, "ci95": [end if np.isfinite(end) else None for end in ends]}


def _per_user(lists: pd.DataFrame, outcome: str) -> tuple[np.ndarray, np.ndarray]:
    grouped = lists.groupby(C.USER_ID)[outcome]
    return grouped.sum().to_numpy(float), grouped.size().to_numpy(float)


def _ratio(hits_a: float, lists_a: float, hits_b: float, lists_b: float) -> float | None:
    if hits_b == 0:
        return None
    return float((hits_a / lists_a) / (hits_b / lists_b))


def shadow_agreement(champion: pd.DataFrame, shadow: pd.DataFrame, k: int) -> dict[str, Any]:
    """How the shadow lists agree with the champion lists of the same requests: mean overlap@k, mean Kendall tau
    over the union of both top-k, and the median per-request latency ratio shadow/champion."""
    empty = {"pairs": 0, "overlap": None, "kendall_tau": None, "latency_ratio": None}
    if champion.empty or shadow.empty:
        return empty
    tops = {name: _top_k(frame, k) for name, frame in (("champion", champion), ("shadow", shadow))}
    pairs = tops["champion"].index.intersection(tops["shadow"].index)
    if pairs.empty:
        return empty
    scores = np.array([_agreement(tops["champion"][r], tops["shadow"][r], k) for r in pairs]).reshape(-1, 2)
    overlaps, taus = scores[:, 0], scores[:, 1]
    latency = {name: _lists(frame).set_index(REQUEST_ID)["latency_ms"].astype(float) for name, frame in
               (("champion", champion), ("shadow", shadow))}  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = (latency["shadow"].reindex(pairs) / latency["champion"].reindex(pairs)).to_numpy()
    ratios = ratios[np.isfinite(ratios)]
    return {
        "pairs": len(pairs),
        "overlap": float(np.nanmean(overlaps)) if np.isfinite(overlaps).any() else None,
        "kendall_tau": float(np.nanmean(taus)) if np.isfinite(taus).any() else None,
        "latency_ratio": float(np.median(ratios)) if ratios.size else None,
    }


def _top_k(rows: pd.DataFrame, k: int) -> pd.Series:
    """Each request's first ``k`` items in served order."""
    ordered = rows.sort_values([REQUEST_ID, "rank"])
    return ordered.groupby(REQUEST_ID, sort=False)[C.ITEM_ID].agg(lambda items: list(items)[:k])


def _agreement(first: list[str], second: list[str], k: int) -> tuple[float, float]:
    """Overlap@k and Kendall tau-b of two top-k lists (an item missing from a list ranks k, tied with the others
    missing); tau is NaN when fewer than two items or one list is a single tie. Overlap counts the places of the
    longer list (k when lists are full), so two identical lists shorter than k still agree fully."""
    places = max(len(first), len(second))
    overlap = len(set(first) & set(second)) / places if places else float("nan")
    union = list(dict.fromkeys([*first, *second]))
    if len(union) < 2:
        return overlap, float("nan")
    rank_first, rank_second = ({item: i for i, item in enumerate(items)} for items in (first, second))
    tau = stats.kendalltau([rank_first.get(i, k) for i in union], [rank_second.get(i, k) for i in union]).statistic
    return overlap, float(tau)


def load_variant_logs(
    settings: Settings, dataset: str, versions: Collection[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """The /recommend lists users saw, the shadow lists and the live log's events of ``dataset`` (empty frames
    when none); ``versions``: only lists these versions served (the current champion and challenger, not the
    earlier experiments still in the log)."""
    root = impressions_dir(settings, dataset)
    records = read_live_log(settings, dataset)
    events = pd.DataFrame([record.body for record in records if record.kind == EVENT])
    shown, shadow = (_compared(read_lists(folder), versions) for folder in (root, root / SHADOW))
    return shown, shadow, events


def _compared(lists: pd.DataFrame, versions: Collection[str] | None) -> pd.DataFrame:
    keep = lists["endpoint"] == COMPARED_ENDPOINT
    if versions is not None:
        keep &= lists["version"].isin(list(versions))
    return lists[keep].reset_index(drop=True)


def read_lists(root: Path) -> pd.DataFrame:
    """Every logged impression row under ``root`` without its feature row.

    Not ``read_impressions``: that keeps only files with the newest feature names (rows for training one model),
    which would drop a whole arm when the challenger's ranker uses other features than the champion's."""
    files = sorted(root.glob(f"{PARTITION_PREFIX}*/*.parquet"))
    frames = []
    for path in files:
        names = set(pq.read_schema(path).names)
        frame = pq.read_table(path, columns=[c for c in LIST_COLUMNS if c in names]).to_pandas()
        if "variant" not in frame:  # written before variants were logged: the champion served it
            frame["variant"] = CHAMPION
        if "latency_ms" not in frame:
            frame["latency_ms"] = float("nan")
        frames.append(frame[LIST_COLUMNS])
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=SCHEMA.field(name).type.to_pandas_dtype()) for name in LIST_COLUMNS})
    return pd.concat(frames, ignore_index=True)


def variants_table(comparison: dict[str, Any]) -> str:
    """A short readable table: variant, lists, CTR [CI], conversion [CI], p50/p99 ms; then the shadow agreement."""
    lines = [f"{'variant':<12}{'lists':>8}  {'CTR [95% CI]':<26}{'conversion [95% CI]':<26}{'p50/p99 ms':>12}"]
    for name, values in comparison["variants"].items():
        latency = f"{_number(values['latency_ms']['p50'], 1)}/{_number(values['latency_ms']['p99'], 1)}"
        lines.append(
            f"{name:<12}{values['lists']:>8}  {_rate_text(values.get('ctr')):<26}"
            f"{_rate_text(values.get('conversion')):<26}{latency:>12}"
        )
    ratios = comparison["challenger_vs_champion"]
    if ratios is not None:
        lines.append(
            "challenger/champion: " + ", ".join(f"{metric} {_ratio_text(ratio)}" for metric, ratio in ratios.items())
        )
    agreement = comparison["shadow_agreement"]
    lines.append(
        f"shadow vs champion: {agreement['pairs']} pairs, overlap@{comparison['k']} {_number(agreement['overlap'])}, "
        f"Kendall tau {_number(agreement['kendall_tau'])}, latency ratio {_number(agreement['latency_ratio'])}"
    )
    return "\n".join(lines)


def _rate_text(rate: dict[str, Any] | None) -> str:
    if rate is None or rate["rate"] is None:
        return "-"
    return f"{rate['rate']:.3f} {_interval(rate['ci95'])}"


def _ratio_text(ratio: dict[str, Any]) -> str:
    if ratio["ratio"] is None:
        return "undefined (the champion has none)"
    return f"{ratio['ratio']:.3f}x {_interval(ratio['ci95'])}"


def _interval(ends: list[float | None] | None) -> str:
    return "[-]" if ends is None else f"[{_number(ends[0])}, {_number(ends[1])}]"


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
