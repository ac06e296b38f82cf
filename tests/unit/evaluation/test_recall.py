"""Stage-1 Recall@K on a hand-built stage 1 whose sources return fixed lists: the figures are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation.recall import stage1_recall
from models.retrieval.sources import SourceResult, UserQuery
from models.retrieval.stage1 import Stage1, Stage1Config
from models.settings import Settings

ITEMS = np.array([f"i{n}" for n in range(10)])


class Fixed:
    """A source that returns the same rows for every query (best first), minus the query's excluded rows."""

    def __init__(self, name: str, rows: list[int]):
        self.name = name
        self.rows = np.array(rows, dtype=np.int64)

    def retrieve(self, query: UserQuery, k: int) -> SourceResult:
        keep = self.rows[~np.isin(self.rows, query.exclude_rows)][:k]
        return SourceResult(self.name, keep, np.linspace(1.0, 0.5, len(keep)).astype(np.float32))


def test_recall_at_k_per_source_and_merged_by_hand():
    config = Stage1Config.from_settings(Settings(candidate_weights={"a": 1.0, "b": 1.0}, candidate_reserved={}))
    stage1 = Stage1(
        sources=[Fixed("a", [0, 1, 2, 3]), Fixed("b", [4, 5, 0, 6])],  # type: ignore[list-item]
        config=config, created=np.zeros(10), item_ids=ITEMS, ials=None,  # type: ignore[arg-type]
    )  # fmt: skip
    relevant = {"u": {"i1", "i5"}, "v": {"i6", "i9"}}
    features = {"u": {"user_events_all": 1.0, "user_seen_items": ["i0"]}, "v": {"user_events_all": 1.0}}
    recall = stage1_recall(stage1, ["u", "v"], {"u": 0.0, "v": 0.0}, features, relevant, ks=(1, 2, 3))
    # u has seen i0: a gives [i1, i2, i3] (i1 hit), b gives [i4, i5, i6] (i5 at rank 2)
    # v: a gives [i0, i1, i2] (no hit), b gives [i4, i5, i0] (no hit at 3; i6 is b's 4th)
    assert recall["a"] == pytest.approx({"1": (1 / 2 + 0) / 2, "2": (1 / 2 + 0) / 2, "3": (1 / 2 + 0) / 2})
    assert recall["b"] == pytest.approx({"1": 0.0, "2": (1 / 2 + 0) / 2, "3": (1 / 2 + 0) / 2})
    # merged for u by reciprocal rank, equal weights: i1 (1/60) and i4 (1/60) tie, the lower row first → [i1, i4,
    # i2 (1/61), i5 (1/61), ...]: hits at 1 and at 4; v: [i0 (1/60 + 1/62), i4, i1, i5, i2, i6]: i6 at 6
    assert recall["merged"] == pytest.approx({"1": (1 / 2 + 0) / 2, "2": (1 / 2 + 0) / 2, "3": (1 / 2 + 0) / 2})
