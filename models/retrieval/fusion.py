"""Merging the sources' ranked lists into one candidate list, keeping each candidate's provenance.

``fuse`` (weighted reciprocal-rank fusion with reserved slots) builds stage 1's list; ``merge`` (quotas, then
round-robin) builds the fallback and search lists. For every candidate, the rank and score it got from every
source that returned it are kept: the re-ranker uses them as features and explanations show them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.retrieval.sources import EMPTY_ROWS, SourceResult

RRF_K = 60.0
"""Reciprocal-rank fusion's rank offset: a source's first item counts 1/60, its 60th half as much."""


@dataclass
class Candidates:
    """Merged stage-1 output: unique item rows with provenance from every source that returned them."""

    rows: np.ndarray
    primary_source: np.ndarray
    ranks: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    catalogue: np.ndarray | None = None
    """Item ids by row, to name the candidates."""
    fused_scores: np.ndarray | None = None
    """The fusion score of each candidate (the list is in its order); NaN for lists merged by quotas."""

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def item_ids(self) -> np.ndarray:
        if self.catalogue is None:
            raise ValueError("candidates have no catalogue to name their rows")
        return self.catalogue[self.rows]

    def provenance(self, position: int) -> dict[str, dict[str, float]]:
        """{source: {"rank", "score"}} for the candidate at ``position`` (only sources that returned it)."""
        return {
            source: {"rank": int(ranks[position]), "score": float(self.scores[source][position])}
            for source, ranks in self.ranks.items()
            if ranks[position] >= 0
        }

    def sources_of(self, positions: np.ndarray) -> list[tuple[str, ...]]:
        """The sources that returned each candidate at ``positions`` (empty for a position of -1)."""
        return [
            tuple(source for source, ranks in self.ranks.items() if p >= 0 and ranks[p] >= 0)
            for p in positions.tolist()
        ]


def _with_provenance(
    results: Sequence[SourceResult],
    rows: np.ndarray,
    primary: np.ndarray,
    catalogue: np.ndarray | None,
    fused: np.ndarray | None = None,
) -> Candidates:
    """Attach each source's rank and score of every chosen row (-1 / NaN where the source did not return it)."""
    sorter = np.argsort(rows, kind="stable")
    sorted_rows = rows[sorter]
    slots = []
    for result in results:
        slot = np.full(len(result), -1, dtype=np.int64)
        if len(rows) and len(result):
            found = np.clip(np.searchsorted(sorted_rows, result.rows), 0, len(rows) - 1)
            hit = sorted_rows[found] == result.rows
            slot[hit] = sorter[found[hit]]
        slots.append(slot)
    return _candidates(results, slots, rows, primary, catalogue, fused)


def _candidates(
    results: Sequence[SourceResult], slots: Sequence[np.ndarray], rows: np.ndarray, primary: np.ndarray,
    catalogue: np.ndarray | None, fused: np.ndarray | None,
) -> Candidates:  # fmt: skip
    """The candidates ``rows`` with provenance; ``slots[i][j]``: the position in ``rows`` of the j-th item of
    ``results[i]`` (-1: not chosen)."""
    ranks: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    for result, slot in zip(results, slots, strict=True):
        rank = np.full(len(rows), -1, dtype=np.int32)
        score = np.full(len(rows), np.nan, dtype=np.float32)
        hit = np.flatnonzero(slot >= 0)
        rank[slot[hit]] = hit
        score[slot[hit]] = result.scores[hit]
        ranks[result.source] = rank
        scores[result.source] = score
    if fused is None:
        fused = np.full(len(rows), np.nan, dtype=np.float32)
    return Candidates(rows, primary, ranks, scores, catalogue, fused.astype(np.float32))


def merge(
    results: Sequence[SourceResult], quotas: Mapping[str, int], k: int, catalogue: np.ndarray | None = None
) -> Candidates:
    """Take each source's top items up to its quota in the given order, skipping duplicates; if the list is
    still shorter than ``k``, fill it round-robin from what the sources have left."""
    chosen: dict[int, int] = {}
    primary: list[str] = []
    cursors = {r.source: 0 for r in results}

    def take(result: SourceResult, limit: int) -> None:
        taken = 0
        while taken < limit and cursors[result.source] < len(result) and len(chosen) < k:
            row = int(result.rows[cursors[result.source]])
            cursors[result.source] += 1
            if row not in chosen:
                chosen[row] = len(chosen)
                primary.append(result.source)
                taken += 1

    for result in results:
        take(result, quotas.get(result.source, 0))
    while len(chosen) < k and any(cursors[r.source] < len(r) for r in results):
        for result in results:
            take(result, 1)
    return _with_provenance(results, np.array(list(chosen), dtype=np.int64), np.array(primary, dtype=str), catalogue)


def fuse(
    results: Sequence[SourceResult], k: int, weights: Mapping[str, float], reserved: Mapping[str, int] | None = None,
    rrf_k: float = RRF_K, catalogue: np.ndarray | None = None,
) -> Candidates:  # fmt: skip
    """Weighted reciprocal-rank fusion: score(i) = Σ_s w_s / (rrf_k + rank_s(i)). Each source first gets its
    ``reserved`` slots (its best items not yet taken), the rest go by fused score; the list is ordered by fused
    score. On MovieLens, fusion beat fixed per-source quotas in Recall@500."""
    present = [r for r in results if len(r)]
    if not present:
        return _with_provenance(results, EMPTY_ROWS, np.empty(0, dtype=str), catalogue)
    all_rows = np.concatenate([r.rows for r in present])
    contribution = np.concatenate(
        [weights.get(r.source, 0.0) / (rrf_k + np.arange(len(r), dtype=np.float64)) for r in present]
    )
    source_of = np.concatenate([np.full(len(r), i) for i, r in enumerate(present)])
    unique, inverse = np.unique(all_rows, return_inverse=True)
    fused = np.bincount(inverse, weights=contribution, minlength=len(unique))
    strongest = np.lexsort((-contribution, inverse))  # per unique row, its largest contribution first
    first = strongest[np.r_[True, inverse[strongest][1:] != inverse[strongest][:-1]]]
    primary_of = np.empty(len(unique), dtype=np.int64)
    primary_of[inverse[first]] = source_of[first]
    chosen = np.zeros(len(unique), dtype=bool)
    offsets = np.cumsum([0] + [len(r) for r in present])
    for i, result in enumerate(present):
        quota = (reserved or {}).get(result.source, 0)
        if quota <= 0:
            continue
        mine = inverse[offsets[i] : offsets[i + 1]]
        fresh = mine[~chosen[mine]]
        chosen[fresh[: max(0, min(quota, k - int(chosen.sum())))]] = True
    by_score = np.lexsort((unique, -fused))
    remaining = by_score[~chosen[by_score]][: max(0, k - int(chosen.sum()))]
    chosen[remaining] = True
    picked = np.flatnonzero(chosen)
    picked = picked[np.lexsort((unique[picked], -fused[picked]))]
    names = np.array([r.source for r in present], dtype=str)
    position = np.full(len(unique), -1, dtype=np.int64)  # each unique row's place in the list (-1: not chosen)
    position[picked] = np.arange(len(picked))
    entry_slots = iter(np.split(position[inverse], offsets[1:-1]))
    slots = [next(entry_slots) if len(r) else np.empty(0, dtype=np.int64) for r in results]
    return _candidates(results, slots, unique[picked], names[primary_of[picked]], catalogue, fused[picked])


def scale_quotas(shares: Mapping[str, float], k: int) -> dict[str, int]:
    """Per-source quotas for a list of ``k`` from shares that sum to 1 (largest remainder rounding)."""
    total = sum(shares.values())
    raw = {name: k * share / total for name, share in shares.items()}
    quotas = {name: int(np.floor(value)) for name, value in raw.items()}
    leftover = k - sum(quotas.values())
    for name in sorted(raw, key=lambda n: raw[n] - quotas[n], reverse=True)[:leftover]:
        quotas[name] += 1
    return quotas
