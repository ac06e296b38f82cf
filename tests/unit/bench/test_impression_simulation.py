"""The event simulation's user model: position bias, the funnel, and events naming their list."""

from __future__ import annotations

import numpy as np
import pytest

from bench.impressions import examine_probability, expected_outcomes, simulate_events
from models.data.demo_catalog import generate_demo_world


@pytest.fixture(scope="module")
def world():
    return generate_demo_world(n_items=800, n_users=100, n_interactions=5_000, seed=5)


def test_position_bias_falls_with_rank():
    looks = examine_probability(np.arange(5))
    assert looks[0] == 1.0 and np.all(np.diff(looks) < 0)


def test_events_follow_the_funnel_and_name_their_list(world):
    users = world.dataset.users.user_id.tolist()
    items = world.dataset.items.item_id.tolist()[:20]
    events = []
    rng = np.random.default_rng(0)
    for user in users:
        events += simulate_events(world, user, items, 1.78e9, rng, request_id=f"r-{user}")
    assert events, "a hundred users shown twenty items click something"
    assert all(e["request_id"] == f"r-{e['user_id']}" for e in events)
    steps = {(e["user_id"], e["item_id"]): set() for e in events}
    for e in events:
        steps[(e["user_id"], e["item_id"])].add(e["event_type"])
    assert all("click" in s for s in steps.values()), "no cart or purchase without a click"
    assert all("add_to_cart" in s for s in steps.values() if "purchase" in s)


def test_a_list_the_user_likes_scores_higher(world):
    user = world.dataset.users.user_id.iloc[0]
    items = world.dataset.items.item_id.to_numpy()
    prob = world.response_probabilities(np.full(len(items), user), items, 1.78e9)["click"]
    best, worst = items[np.argsort(-prob)[:10]].tolist(), items[np.argsort(prob)[:10]].tolist()
    assert expected_outcomes(world, user, best, 1.78e9)[0] > expected_outcomes(world, user, worst, 1.78e9)[0]
    assert expected_outcomes(world, user, [], 1.78e9) == (0.0, 0.0)
