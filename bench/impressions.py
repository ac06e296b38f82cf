"""``python -m bench.impressions --state DIR``: does training on served lists help? An event simulation on the demo.

The demo's users are simulated with the hidden traits that generated its log (``DemoWorld``): a user looks at rank r
of a list with probability 1 / log2(r + 2) (position bias), then clicks, adds to cart and buys with the funnel's
probabilities. Round 1 serves lists to some users through the real runtime (Feast online store, live log, impression
log) and posts the simulated events back with their request ids. Two re-rankers are then trained with the published
ranker's settings on the pipeline's training set — without (A) and with (B) the logged lists as extra groups — and
round 2 serves lists with each to the same users (a second visit) and to users never served, scoring each list by
its expected clicks and purchases under the simulator. Output: ``<out>/impressions.json`` and a printed table.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss  # noqa: F401 - FAISS before torch (see STACK.md)
import numpy as np
import pandas as pd

from bench.common import log
from flows.common import code_version
from flows.quality import replace_block
from models.data import columns as C
from models.data.demo_catalog import DemoWorld, generate_demo_world
from models.evaluation.metrics import paired_bootstrap_ratio
from models.features.spec import CATEGORICAL_FEATURES
from models.live.impressions import impressions_dir, read_impressions
from models.live.ingest import read_live_log
from models.live.log import EVENT
from models.ranking.ranker import Ranker, RankerParams, train_ranker
from models.ranking.rules import Filters
from models.recommender.versions import VersionStore, choose_namespace
from models.settings import Settings
from models.training.impressions import LoggedLists, concat_ranking_data
from models.training.steps import load_training
from serving.runtime import Runtime
from serving.state import copy_serving_state

FUNNEL = ("click", "add_to_cart", "purchase")
BEGIN = "<!-- impressions:begin (written by `make simulate`; do not edit by hand) -->"
END = "<!-- impressions:end -->"


def examine_probability(ranks: np.ndarray) -> np.ndarray:
    """Position bias: the chance a user looks at the item at 0-based ``ranks``."""
    return 1.0 / np.log2(ranks + 2.0)


def expected_outcomes(world: DemoWorld, user: str, items: list[str], when: float) -> tuple[float, float]:
    """(expected clicks, expected purchases) of one list under the simulator."""
    if not items:
        return 0.0, 0.0
    prob = world.response_probabilities(np.full(len(items), user), np.array(items), when)
    clicks = examine_probability(np.arange(len(items))) * prob["click"]
    return float(clicks.sum()), float((clicks * prob["cart"] * prob["purchase"]).sum())


def simulate_events(world: DemoWorld, user: str, items: list[str], when: float, rng: np.random.Generator,
                    request_id: str) -> list[dict[str, Any]]:  # fmt: skip
    """Sampled events of one shown list: look (position bias), then click, cart, purchase as the funnel says."""
    if not items:
        return []
    prob = world.response_probabilities(np.full(len(items), user), np.array(items), when)
    looked = rng.random(len(items)) < examine_probability(np.arange(len(items)))
    clicked = looked & (rng.random(len(items)) < prob["click"])
    carted = clicked & (rng.random(len(items)) < prob["cart"])
    bought = carted & (rng.random(len(items)) < prob["purchase"])
    events = []
    for step, mask in zip(FUNNEL, (clicked, carted, bought), strict=True):
        events += [{C.USER_ID: user, C.ITEM_ID: items[i], C.EVENT_TYPE: step, "request_id": request_id}
                   for i in np.flatnonzero(mask)]  # fmt: skip
    return events


def simulation_state(source: Settings, target: Path) -> Settings:
    """A serving copy of ``source``, so the simulation's log and impressions stay out of it."""
    if target.exists():
        shutil.rmtree(target)
    return copy_serving_state(source, target).model_copy(update={"impressions_flush_rows": 10**9})


def newest_done(folder: Path) -> Path:
    """The newest step output under ``folder`` (the pipeline's work folder keys its outputs by their inputs)."""
    done = sorted(folder.glob("*/done.json"), key=lambda p: p.stat().st_mtime)
    if not done:
        raise SystemExit(f"no finished step output under {folder}: run the demo pipeline on this state first")
    return done[-1].parent


def serve(runtime: Runtime, world: DemoWorld, users: list[str], k: int) -> dict[str, tuple[str, list[str], float]]:
    """user → (request id, items shown, serving clock) through the runtime (impressions are logged)."""
    shown = {}
    for user in users:
        loaded, result = runtime.recommend(user, k, Filters(), True, False)
        shown[user] = (str(result.request_id), [i.item_id for i in result.items], loaded.as_of())
    return shown


def collect(runtime: Runtime, world: DemoWorld, users: list[str], k: int, seed: int) -> dict[str, float]:
    """Round 1: serve, simulate, post the events with their request ids (the live log), write the impressions."""
    rng = np.random.default_rng(seed)
    events = 0
    for user, (request_id, items, when) in serve(runtime, world, users, k).items():
        simulated = simulate_events(world, user, items, when, rng, request_id)
        if simulated:
            runtime.accept_events(simulated)
            events += len(simulated)
    runtime.flush_impressions()
    return {"lists": float(len(users)), "events": float(events)}


def rankers(source: Settings, sim: Settings, dataset: str) -> tuple[Ranker, Ranker, dict[str, float]]:
    """(A: the pipeline's training set, B: the same plus the logged lists), both with the published settings."""
    data, spec = load_training(newest_done(source.work_dir / "training_set"))
    manifest = json.loads((VersionStore(source.versions_dir).current() / "manifest.json").read_text())
    section = manifest["ranker"]
    shown, names = read_impressions(impressions_dir(sim, dataset))
    records = read_live_log(sim, dataset)
    events = pd.DataFrame([r.body for r in records if r.kind == EVENT])
    served = LoggedLists(shown, names, events, sim.impression_attribution_hours * 3600.0).groups(spec.names)
    if served is None:
        raise SystemExit("no logged list earned an event: nothing to learn from (more users?)")
    k = int(section["k_candidates"])
    params = replace(RankerParams.from_settings(source), num_leaves=int(section["leaves"]),
                     min_data_in_leaf=int(section["min_data_in_leaf"]),
                     num_boost_round=max(1, int(section["best_iteration"])))  # fmt: skip
    fit = lambda d: train_ranker(d.truncate(k), None, spec.names, CATEGORICAL_FEATURES, params)  # noqa: E731
    stats = {"base_groups": float(len(data.groups)), "impression_groups": float(len(served.groups)),
             "impression_rows": float(len(served.labels)), "impression_positives": float((served.labels > 0).sum())}  # fmt: skip
    return fit(data), fit(concat_ranking_data(data, served)), stats


def score_lists(runtime: Runtime, world: DemoWorld, ranker: Ranker, users: list[str], k: int) -> np.ndarray:
    """Per user: (expected clicks, expected purchases) of the list ``ranker`` serves them."""
    loaded = runtime._current()
    original = loaded.live.recommender
    loaded.live.recommender = replace(original, ranker=ranker)
    try:
        shown = serve(runtime, world, users, k)
    finally:
        loaded.live.recommender = original
    return np.array([expected_outcomes(world, user, items, when) for user, (_, items, when) in shown.items()])


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, name in enumerate(("clicks", "purchases")):
        ratio, low, high = paired_bootstrap_ratio(b[:, column], a[:, column])
        out[name] = {"A_mean": float(a[:, column].mean()), "B_mean": float(b[:, column].mean()),
                     "B_over_A": ratio, "ci95": [low, high]}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True, help="state folder of a finished demo pipeline run")
    parser.add_argument("--out", type=Path, default=None, help="default: <state>/bench/impressions")
    parser.add_argument("--users", type=int, default=2000, help="users served in round 1 (and as many new ones)")
    parser.add_argument("--k", type=int, default=20, help="list length shown")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--readme", type=Path, default=None, help="also write the table into this README's block")
    args = parser.parse_args(argv)
    source = Settings(state_dir=args.state)
    source = source.model_copy(update={"namespace": choose_namespace(source.versions_root, source.namespace)})
    out = args.out or args.state / "bench" / "impressions"
    world = generate_demo_world(source.demo_items, source.demo_users, source.demo_interactions, source.seed)
    sim = simulation_state(source, out / "state")
    runtime = Runtime(sim)
    runtime.start()
    dataset = runtime._current().dataset
    if dataset != "demo":
        raise SystemExit(f"the simulation needs the demo's hidden traits; {args.state} serves '{dataset}'")
    known = sorted(set(world.dataset.interactions[C.USER_ID]))
    order = np.random.default_rng(args.seed).permutation(len(known))
    served = [known[i] for i in order[: args.users]]
    fresh = [known[i] for i in order[args.users : 2 * args.users]]
    log(f"round 1: {len(served)} lists of {args.k}")
    collected = collect(runtime, world, served, args.k, args.seed)
    log(f"round 1: {collected['events']:.0f} simulated events; training A and B")
    a, b, stats = rankers(source, sim, dataset)
    results: dict[str, Any] = {"round1": collected, "training": stats, "users": args.users, "k": args.k,
                               "measured_with": code_version()}  # fmt: skip
    for name, users in (("second_visit", served), ("new_users", fresh)):
        log(f"round 2: {name}, {len(users)} users, A and B")
        results[name] = compare(
            score_lists(runtime, world, a, users, args.k), score_lists(runtime, world, b, users, args.k)
        )
    runtime.close()
    (out / "impressions.json").write_text(json.dumps(results, indent=2))
    table = render(results)
    print(table)
    if args.readme is not None:
        args.readme.write_text(replace_block(args.readme.read_text(), table, BEGIN, END))
    return 0


def render(results: dict[str, Any]) -> str:
    version = results["measured_with"]
    round1, training = results["round1"], results["training"]
    lines = [
        f"Measured at commit {str(version['commit'])[:7]} (code {version['code_fingerprint']}): round 1 served "
        f"{round1['lists']:.0f} lists of {results['k']} and simulated {round1['events']:.0f} events; "
        f"{training['impression_groups']:.0f} lists with an outcome joined {training['base_groups']:.0f} training "
        f"groups ({training['impression_positives']:.0f} positives in {training['impression_rows']:.0f} rows).",
        "",
        "| users | outcome | A: training set | B: + logged lists | B / A [95 % CI] |",
        "|---|---|---|---|---|",
    ]
    for group in ("second_visit", "new_users"):
        for outcome, row in results[group].items():
            lines.append(f"| {group.replace('_', ' ')} | expected {outcome} per list | {row['A_mean']:.4f} | "
                         f"{row['B_mean']:.4f} | {row['B_over_A']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
