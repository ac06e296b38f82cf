"""The release decision: a paired interval on the validation cut decides, never a bare mean."""

from __future__ import annotations

import numpy as np

from models.evaluation.release import release_decision
from models.training.steps import release_holdout


def scores(mean: float, users: int = 2000, seed: int = 0) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(mean, 0.2, users), 0, 1)


def test_the_first_version_is_published():
    decision = release_decision(scores(0.3), None, 0.0, has_champion=False)
    assert decision.publish and "first version" in decision.reason


def test_a_clear_gain_is_published():
    champion = scores(0.30)
    decision = release_decision(champion + 0.03, champion, 0.0, has_champion=True)
    assert decision.publish and decision.ci95 is not None and decision.ci95[0] > 1.0
    assert "beats the champion" in decision.reason


def test_a_tie_is_not_published_even_with_a_higher_mean():
    champion = scores(0.30)
    noise = np.random.default_rng(1).normal(0, 0.05, len(champion))
    new = np.clip(champion + noise + 0.0005, 0, 1)  # a higher mean by chance, well inside the noise
    decision = release_decision(new, champion, 0.0, has_champion=True)
    assert not decision.publish and decision.ci95 is not None and decision.ci95[0] <= 1.0
    assert "kept as challenger" in decision.reason


def test_a_worse_version_is_not_published_but_can_be_forced():
    champion = scores(0.30)
    worse = champion * 0.8
    assert not release_decision(worse, champion, 0.0, has_champion=True).publish
    forced = release_decision(worse, champion, 0.0, has_champion=True, force=True)
    assert forced.publish and forced.reason.startswith("forced although it does not beat")


def test_a_negative_margin_accepts_a_version_not_worse_than_it():
    champion = scores(0.30)
    same = champion.copy()
    assert not release_decision(same, champion, 0.0, has_champion=True).publish
    assert release_decision(same, champion, -0.01, has_champion=True).publish


def test_an_incomparable_champion_is_never_a_win():
    decision = release_decision(scores(0.3), None, 0.0, has_champion=True)
    assert not decision.publish and "other features" in decision.reason
    assert release_decision(scores(0.3), None, 0.0, has_champion=True, force=True).publish


def test_the_release_holdout_is_the_same_users_in_every_run():
    users = np.array([f"u{i}" for i in range(5000)])
    held = release_holdout(users, 0.2)
    assert 0.18 < held.mean() < 0.22
    shuffled = np.random.default_rng(0).permutation(users)
    again = dict(zip(shuffled, release_holdout(shuffled, 0.2), strict=True))
    assert all(again[u] == h for u, h in zip(users, held, strict=True)), "by id, not by position"
    groups = np.repeat(users[:50], 3)  # a user's groups (served lists) are all in or all out
    assert (release_holdout(groups, 0.2).reshape(50, 3).std(axis=1) == 0).all()
