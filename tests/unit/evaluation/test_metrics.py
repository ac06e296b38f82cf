"""Metrics on tiny hand-built cases with values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.evaluation.metrics import average_precision_at_k, evaluate_rankings, ndcg_at_k, precision_at_k, recall_at_k

RANKED = ["a", "b", "c", "d", "e"]


def test_recall():
    assert recall_at_k(RANKED, {"b", "e", "z"}, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, {"b", "e", "z"}, 5) == pytest.approx(2 / 3)


def test_precision():
    assert precision_at_k(RANKED, {"a", "c"}, 4) == 0.5
    assert precision_at_k(["a"], {"a"}, 10) == 0.1


def test_ndcg_binary_gains():
    # hits at ranks 2 and 4 (1-based); ideal puts 2 hits at ranks 1 and 2
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(RANKED, {"b", "d"}, 5) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(RANKED, {"a"}, 5) == 1.0
    # ideal is over min(k, |relevant|): 3 relevant, k = 2
    assert ndcg_at_k(["x", "a"], {"a", "b", "c"}, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_average_precision():
    # hits at ranks 1 and 3: (1/1 + 2/3) / min(5, 2)
    assert average_precision_at_k(RANKED, {"a", "c"}, 5) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision_at_k(RANKED, {"z"}, 5) == 0.0


def test_evaluate_rankings_averages_users_and_counts_missing_as_zero():
    result = evaluate_rankings({"u1": ["a", "b"]}, {"u1": {"a"}, "u2": {"q"}}, metrics=("recall", "ndcg"), ks=(1, 2))
    assert result == {"recall@1": 0.5, "recall@2": 0.5, "ndcg@1": 0.5, "ndcg@2": 0.5}


def test_undefined_without_relevant():
    with pytest.raises(ValueError):
        ndcg_at_k(RANKED, set(), 5)
    with pytest.raises(ValueError):
        evaluate_rankings({}, {})


def test_paired_bootstrap_ratio() -> None:
    from models.evaluation.metrics import paired_bootstrap_ratio, per_user

    rng = np.random.default_rng(1)
    baseline = rng.random(400)
    ratio, low, high = paired_bootstrap_ratio(2 * baseline, baseline)
    assert ratio == pytest.approx(2.0) and low == pytest.approx(2.0) and high == pytest.approx(2.0)
    noisy = baseline + rng.normal(0, 0.3, 400)  # same mean in expectation: the interval must straddle 1
    ratio, low, high = paired_bootstrap_ratio(noisy, baseline)
    assert low < 1.0 < high and low < ratio < high
    few = paired_bootstrap_ratio(noisy[:20], baseline[:20])
    assert few[2] - few[1] > high - low  # fewer users, wider interval
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap_ratio(baseline, baseline[:10])
    relevant = {"u1": {"a"}, "u2": {"b"}}
    np.testing.assert_allclose(per_user({"u1": ["a", "x"], "u2": ["x"]}, relevant, "recall", 2), [1.0, 0.0])
