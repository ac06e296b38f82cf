"""Labels on hand-built timelines, leakage checks, group bookkeeping, and LambdaRank learning a planted signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.data import columns as C
from models.data.splits import label_split
from models.files import ArtifactError
from models.ranking.ranker import Ranker, RankerParams, RankingData, train_ranker
from models.settings import Settings
from models.training.steps import choose_k, k_deficits
from models.training.training_set import LeakageError, check_no_leakage, label_grades

T0 = pd.Timestamp("2025-01-01", tz="UTC")


def at(days: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=days)


def test_labels_are_the_evaluations_positives_graded_by_worth():
    window = pd.DataFrame(
        {
            C.USER_ID: ["u", "u", "u", "u", "v", "w", "w"],
            C.ITEM_ID: ["a", "a", "b", "c", "a", "m", "n"],
            C.EVENT_TYPE: [C.VIEW, C.PURCHASE, C.CLICK, C.VIEW, C.ADD_TO_CART, C.RATED, C.RATED],
            C.RATING: [np.nan, np.nan, np.nan, np.nan, np.nan, 4.5, 3.5],
        }
    )
    history = pd.DataFrame({C.USER_ID: ["v"], C.ITEM_ID: ["a"]})
    labels = label_grades(window, history)
    assert labels["u"] == {"a": 3, "b": 1}  # a purchase outranks a click; a view is not a positive
    assert "v" not in labels  # v's cart is of an item seen before the window: the protocol drops it
    assert labels["w"] == {"m": 1}  # a rating of 4 or more is a positive, 3.5 is not


def timeline() -> pd.DataFrame:
    # user u: 10 events on days 0..9; the inner split puts days 8, 9 in the label window
    return pd.DataFrame(
        {
            C.USER_ID: "u",
            C.ITEM_ID: [f"i{d}" for d in range(10)],
            C.TIMESTAMP: [at(d) for d in range(10)],
            C.EVENT_TYPE: C.CLICK,
            C.RATING: np.nan,
        }
    )


def test_leakage_check_passes_features_at_the_cut():
    inner = label_split(timeline(), 0.2)
    check_no_leakage(pd.Series({"u": at(8)}), inner, pd.Series({"u": at(10)}))


def test_leakage_check_rejects_features_after_labels():
    inner = label_split(timeline(), 0.2)
    with pytest.raises(LeakageError, match="features after labels"):
        check_no_leakage(pd.Series({"u": at(8.5)}), inner, pd.Series({"u": at(10)}))


def test_leakage_check_rejects_labels_from_the_test_period():
    inner = label_split(timeline(), 0.2)
    with pytest.raises(LeakageError, match="labels after the test start"):
        check_no_leakage(pd.Series({"u": at(8)}), inner, pd.Series({"u": at(8.5)}))


def test_groups_must_cover_every_row():
    with pytest.raises(ValueError, match="groups sum to 5"):
        RankingData(np.zeros((6, 2)), np.zeros(6), np.array([2, 3]), np.array(["a", "b"]))
    data = RankingData(np.arange(12).reshape(6, 2), np.arange(6), np.array([1, 2, 3]), np.array(["a", "b", "c"]))
    picked = data.select_groups(np.array([True, False, True]))
    assert picked.groups.tolist() == [1, 3] and picked.labels.tolist() == [0, 3, 4, 5]
    assert picked.group_users.tolist() == ["a", "c"]


def test_truncation_keeps_each_groups_first_candidates_and_the_true_ideal():
    data = RankingData(np.arange(10).reshape(5, 2).astype(np.float32), np.array([0, 1, 1, 0, 1]), np.array([3, 2]),
                       np.array(["a", "b"]), relevant=np.array([3, 1]))  # fmt: skip
    top = data.truncate(2)
    assert top.groups.tolist() == [2, 2] and top.labels.tolist() == [0, 1, 0, 1]
    # a: its one retrieved positive ranked first, but it has 3 relevant items in all: 1 / (1 + 1/log2 3 + 1/2)
    ndcg = top.true_ndcg(np.array([0.1, 0.9, 0.8, 0.2]))
    assert ndcg[0] == pytest.approx(1.0 / (1.0 + 1.0 / np.log2(3) + 0.5))
    assert ndcg[1] == pytest.approx(1.0 / np.log2(3))  # b's positive ranked second of two


def test_the_smallest_k_within_one_paired_standard_error_of_the_best_is_chosen():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 0.3, 2_000)
    noise = {k: rng.normal(0.0, 0.05, base.size) for k in (50, 100, 200, 500)}
    # 50 is clearly worse, 100 and 200 differ from 500 by noise only: the cheapest of those is kept
    per_user = {50: base - 0.03 + noise[50], 100: base + noise[100], 200: base + noise[200], 500: base + noise[500]}
    assert choose_k(per_user, 1.0) == 100
    deficits = k_deficits(per_user)
    assert min(d["deficit"] for d in deficits.values()) == 0.0
    assert deficits[50]["deficit"] == pytest.approx(0.03, abs=0.006) and deficits[50]["deficit_se"] > 0
    # a small gain that every user sees is measurable: the larger K is then worth its cost
    per_user[100] = base - 0.002
    per_user[500] = base
    assert choose_k({100: per_user[100], 500: per_user[500]}, 1.0) == 500
    assert choose_k({100: per_user[100], 500: per_user[500]}, 0.0) == 500
    # identical lists at every K: the smallest
    assert choose_k({50: base, 100: base.copy()}, 1.0) == 50


def planted(n_groups: int, seed: int) -> RankingData:
    """Feature 0 decides relevance, feature 1 is noise."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_groups * 20, 2)).astype(np.float32)
    labels = (features[:, 0] > 1.0).astype(int) + (features[:, 0] > 1.8).astype(int)
    return RankingData(features, labels, np.full(n_groups, 20), np.array([f"u{i}" for i in range(n_groups)]))


def test_lambdarank_learns_the_planted_feature_and_round_trips(tmp_path: Path):
    params = RankerParams.from_settings(
        Settings(ranker_rounds=50, ranker_min_data_in_leaf=5, ranker_early_stopping=10, threads=1)
    )
    ranker = train_ranker(planted(200, 0), planted(40, 1), ["signal", "noise"], [], params)
    importance = ranker.importance()
    assert importance["signal"] > 10 * max(importance["noise"], 1e-9)
    test = planted(30, 2)
    scores = ranker.predict(test.features)
    assert scores[test.labels > 0].min() > np.median(scores[test.labels == 0])
    assert scores[test.labels == 2].mean() > scores[test.labels == 1].mean() > scores[test.labels == 0].mean()
    section = ranker.save(tmp_path)
    again = Ranker.load(tmp_path, section, ["signal", "noise"])
    np.testing.assert_allclose(again.predict(test.features), scores, rtol=1e-6)
    contributions = again.contributions(test.features[:3])
    np.testing.assert_allclose(contributions.sum(axis=1), again.predict(test.features[:3]), rtol=1e-5)


def test_ranker_load_names_the_problem(tmp_path: Path):
    params = RankerParams.from_settings(
        Settings(ranker_rounds=5, ranker_min_data_in_leaf=5, ranker_early_stopping=5, threads=1)
    )
    section = train_ranker(planted(50, 0), planted(10, 1), ["signal", "noise"], [], params).save(tmp_path)
    with pytest.raises(ArtifactError, match="differ from the feature service's order"):
        Ranker.load(tmp_path, section, ["noise", "signal"])
    (tmp_path / "ranker.txt").write_text("not a model")
    with pytest.raises(ArtifactError, match=r"ranker\.txt: not a readable LightGBM model"):
        Ranker.load(tmp_path, section)
    (tmp_path / "ranker.txt").unlink()
    with pytest.raises(ArtifactError, match="ranker model file missing"):
        Ranker.load(tmp_path, section)
