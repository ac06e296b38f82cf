"""Item to item: items close to one item in text space and in collaborative space."""

from __future__ import annotations

import numpy as np

from models.ranking.rules import Catalog, Filters, RulesConfig, apply_rules
from models.recommender.request import Recommended
from models.retrieval.als import mips_query
from models.retrieval.fusion import RRF_K, merge, scale_quotas
from models.retrieval.sources import CollaborativeSource, SemanticSource, SourceResult, UserQuery


def similar_items(
    semantic: SemanticSource, collaborative: CollaborativeSource, catalog: Catalog, collab_rows: np.ndarray,
    item_row: int, k: int, filters: Filters, as_of: float, in_stock_only: bool,
) -> list[Recommended]:  # fmt: skip
    """Items close to the item at ``item_row``, ordered by reciprocal-rank fusion of its text and collaborative
    neighbour lists (an item near the top of both comes first); ``collab_rows`` maps catalogue rows to ALS rows."""
    item_id = str(catalog.item_ids[item_row])
    exclude = frozenset({item_id})
    fetch = max(4 * k, 50)
    query = UserQuery(None, as_of, text_vector=np.asarray(semantic.item_vectors[item_row]), exclude=exclude,
                      exclude_rows=np.array([item_row], dtype=np.int64))  # fmt: skip
    results = [semantic.retrieve(query, fetch)]
    collab_row = collab_rows[item_row]
    if collab_row >= 0:  # neighbours by ALS inner product (the MIPS query of the item's own factors)
        scores, found = collaborative.index.search_rows(
            mips_query(collaborative.model.item_factors[collab_row], collaborative.index.dim), fetch + 1
        )
        keep = (found[0] != item_row) & (found[0] >= 0)
        results.insert(0, SourceResult("ials", found[0][keep][:fetch], scores[0][keep][:fetch]))
    merged = merge(results, scale_quotas({r.source: 1.0 for r in results}, fetch), fetch, catalog.item_ids)
    rows = merged.rows
    fused = np.zeros(len(rows), dtype=np.float64)
    for ranks in merged.ranks.values():
        fused += np.where(ranks >= 0, 1.0 / (RRF_K + np.maximum(ranks, 0)), 0.0)
    order = np.argsort(-fused, kind="stable")
    rows, fused = rows[order], fused[order]
    rules = RulesConfig(in_stock_only=in_stock_only, freshness_weight=0.0, freshness_half_life_days=1.0,
                        max_per_category=0)  # fmt: skip
    ruled = apply_rules(catalog, rows, fused, k, as_of, rules, filters, exclude)
    return [Recommended(str(catalog.item_ids[r]), float(s)) for r, s in zip(ruled.rows, ruled.scores, strict=True)]
