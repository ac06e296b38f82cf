"""The offline pipeline's cost curve: wall time and peak resident memory of each stage at several catalogue sizes.

Each size is a bench state (``bench/state.py``: the demo catalogue scaled up, items, users and interactions by the
same factor, built once by ``python -m flows.cli pipeline`` and reused). The coarse stages come from the pipeline's
summary lines, the finer per-task times from the state's Prefect database. A stage's growth exponent is the slope
of log(seconds) against log(items) (and against log(interactions)): 1 is linear; above 1.15 the stage is flagged
as superlinear, the one that will dominate at the next order of magnitude.

``python -m bench.pipeline_cost [--sizes 20000,100000] [--root DIR] [--out DIR]`` runs it alone and prints the table.
"""

from __future__ import annotations

import argparse
import math
import re
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import log
from bench.state import (
    CHEAP_SETTINGS,
    PEAK_MB_LINE,
    SECONDS_LINE,
    Catalogue,
    bench_root,
    ensure_state,
    pipeline_summary,
)
from models.settings import Settings

SCALES = (20_000, 100_000)
"""Items of the full bench's sizes (users and interactions by the demo's ratios). 1 000 000 is opt-in:
``--pipeline-sizes 20000,100000,1000000``."""
QUICK_SCALES = (5_000, 20_000)
SUPERLINEAR = 1.15
"""Exponents above this are flagged: beyond the noise of two runs on a shared machine, clearly worse than linear."""
TOO_SHORT_SECONDS = 2.0
"""A stage under this at every size is start-up and bookkeeping: its slope says nothing about the data."""
PLOT_FILE = "pipeline_cost.png"
CACHED_STATE = "Cached"
PIPELINE_FLOW = "pipeline"
PIPELINE_TASK_STAGE = {
    "prepare_dataset": "data",
    "fingerprint_dataset": "data",
    "build_serving_stage1": "serving_stage1",
    "publish_version": "publish",
    "move_registry_alias": "publish",
    "build_bento": "bento",
}
"""The coarse stage (``flows/pipeline.py``'s ``log.stage``) of the tasks the parent flow runs itself; a subflow's
tasks take the subflow's name (stage1, features, reranker)."""


@dataclass(frozen=True)
class Cap:
    """A setting that bounds part of the pipeline's work whatever the catalogue size."""

    field: str
    covers: tuple[str, ...]
    what: str
    users: bool = True


CAPS = (
    Cap("train_max_users", ("reranker", "reranker/build_training_set", "reranker/train_reranker"),
        "re-ranker training users"),
    Cap("eval_max_users", ("reranker", "reranker/evaluate_reranker"), "evaluated test users"),
    Cap("tuning_max_users", ("stage1", "stage1/tune_peers", "reranker", "reranker/build_training_set"),
        "validation users per tuning trial and fusion search"),
    Cap("tuning_seconds_per_peer", ("stage1", "stage1/tune_peers"), "seconds of search per peer", users=False),
)  # fmt: skip
"""Where ``models/`` reads each cap (training/steps.py, evaluation/offline.py, evaluation/tuning.py)."""


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"20000,100000"`` → (20000, 100000), sorted, duplicates dropped."""
    sizes = sorted({int(v.replace("_", "")) for v in text.split(",") if v.strip()})
    if not sizes or sizes[0] <= 0:
        raise ValueError(f"sizes must be positive item counts, got {text!r}")
    return tuple(sizes)


# ---- the Prefect database ----------------------------------------------------------------------------------------


def _interval_seconds(value: Any) -> float:
    """Prefect stores an interval on SQLite as a datetime after the epoch ('1970-01-01 00:16:20.646937')."""
    if value in (None, "", "0", 0):
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    return (datetime.fromisoformat(str(value)) - datetime(1970, 1, 1)).total_seconds()


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


def _task_name(run_name: str) -> str:
    """A task run's name without Prefect's run suffix ('embed_items-ad5' → 'embed_items', 'stage1-0' → 'stage1')."""
    return re.sub(r"-[0-9a-f]+$", "", run_name)


def task_durations(db_path: Path) -> dict[str, Any]:
    """Per-task seconds of the latest ``pipeline`` flow run and its subflows, read-only from Prefect's SQLite.

    Keys are ``stage/task`` (e.g. ``stage1/embed_items``); several runs of a task (shards, one per entity) add up
    in ``seconds`` (time in Running) and span ``wall_seconds``. A task served from Prefect's cache took ~0 s: it is
    marked ``cached`` rather than read as fast. The task that stands for a subflow is left out: its subflow's
    tasks are listed instead.
    """
    if not db_path.exists():
        raise FileNotFoundError(f"no Prefect database at {db_path}")
    # mode=ro: never a write, and a read-only connection never checkpoints the WAL into a state it only reads
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as connection:
        connection.row_factory = sqlite3.Row
        root = connection.execute(
            "SELECT fr.id, fr.name, fr.state_name, fr.start_time, fr.end_time, fr.total_run_time FROM flow_run fr "
            "JOIN flow f ON f.id = fr.flow_id WHERE f.name = ? ORDER BY fr.created DESC LIMIT 1",
            (PIPELINE_FLOW,),
        ).fetchone()
        if root is None:
            raise LookupError(f"no '{PIPELINE_FLOW}' flow run in {db_path}")
        runs = _flow_tree(connection, root["id"])
    return {
        "flow_run": {"id": root["id"], "name": root["name"], "state": root["state_name"],
                     "started": root["start_time"], "seconds": round(_interval_seconds(root["total_run_time"]), 1)},
        "tasks": _aggregate(runs),
    }  # fmt: skip


def _flow_tree(connection: sqlite3.Connection, root_id: str) -> list[dict[str, Any]]:
    """The task runs of a flow run and, recursively, of its subflows (linked by ``parent_task_run_id``), each
    with the name of the flow it ran in; the tasks that stand for subflows are dropped."""
    tasks: list[dict[str, Any]] = []
    frontier = [(root_id, PIPELINE_FLOW)]
    while frontier:
        flow_run_id, flow_name = frontier.pop()
        rows = connection.execute(
            "SELECT id, name, state_name, start_time, end_time, total_run_time FROM task_run WHERE flow_run_id = ?",
            (flow_run_id,),
        ).fetchall()
        children: dict[str, list[tuple[str, str]]] = {}  # a list: a retried subflow has several flow runs
        for child in connection.execute(
            "SELECT fr.id, fr.parent_task_run_id, f.name AS flow_name FROM flow_run fr JOIN flow f "
            f"ON f.id = fr.flow_id WHERE fr.parent_task_run_id IN ({','.join('?' * len(rows))})",
            [row["id"] for row in rows],
        ):
            children.setdefault(child["parent_task_run_id"], []).append((child["id"], child["flow_name"]))
        for row in rows:
            if row["id"] in children:
                frontier.extend(children[row["id"]])
            else:
                tasks.append({**dict(row), "flow": flow_name})
    return tasks


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Task runs grouped by ``stage/task``, in the order they started."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(runs, key=lambda r: r["start_time"] or "9999"):
        name = _task_name(run["name"])
        stage = PIPELINE_TASK_STAGE.get(name, PIPELINE_FLOW) if run["flow"] == PIPELINE_FLOW else run["flow"]
        grouped.setdefault(f"{stage}/{name}", []).append(run)
    result = {}
    for key, group in grouped.items():
        starts = [t for r in group if (t := _timestamp(r["start_time"]))]
        ends = [t for r in group if (t := _timestamp(r["end_time"]))]
        cached = sum(r["state_name"] == CACHED_STATE for r in group)
        result[key] = {
            "runs": len(group),
            "seconds": round(sum(_interval_seconds(r["total_run_time"]) for r in group), 2),
            "wall_seconds": round((max(ends) - min(starts)).total_seconds(), 2) if starts and ends else None,
            "cached_runs": cached,
            "cached": cached == len(group),
            "states": sorted({str(r["state_name"]) for r in group}),
        }
    return result


# ---- growth exponents --------------------------------------------------------------------------------------------


def fit_exponent(sizes: Sequence[float], values: Sequence[float | None]) -> float | None:
    """Least-squares slope of log(value) against log(size) over the points with a positive value (None: < 2)."""
    points = [(math.log(s), math.log(v)) for s, v in zip(sizes, values, strict=True) if v is not None and v > 0]
    if len({x for x, _ in points}) < 2:
        return None
    xs, ys = np.array(points).T
    return round(float(np.polyfit(xs, ys, 1)[0]), 3) + 0.0  # + 0.0: no "-0.00" for a flat stage


def step_exponents(sizes: Sequence[float], values: Sequence[float | None]) -> list[float | None]:
    """The slope between each pair of consecutive sizes (None where a value is missing)."""
    return [fit_exponent(sizes[i : i + 2], values[i : i + 2]) for i in range(len(sizes) - 1)]


def growth(
    items: Sequence[int], interactions: Sequence[int], seconds: Sequence[float | None], cached: Sequence[bool] = ()
) -> dict[str, Any]:
    """A stage's exponents (overall and per step, against items and interactions) and its flags."""
    cached = list(cached) or [False] * len(seconds)
    measured = [None if c else s for s, c in zip(seconds, cached, strict=True)]  # a cached run measures nothing
    exponent = fit_exponent(items, measured)
    known = [s for s in measured if s is not None]
    flags = []
    if any(cached):
        flags.append("cached at some size")
    if known and max(known) < TOO_SHORT_SECONDS:
        flags.append("too short to fit")
    elif exponent is not None and exponent > SUPERLINEAR:
        flags.append("superlinear")
    return {
        "exponent_items": exponent,
        "exponent_interactions": fit_exponent(interactions, measured),
        "steps_items": step_exponents(items, measured),
        "flags": flags,
    }


ITEM_ITEM_STEPS = ("stage1", "stage1/tune_peers", "serving_stage1", "serving_stage1/build_serving_stage1", "reranker",
                   "reranker/build_training_set", "reranker/evaluate_reranker")  # fmt: skip
"""Where stage 1 (or a tuning trial) is fitted: EASE^R's n x n inverse (cubic) and the dense RP3beta / item-kNN
products (quadratic) over the active items, up to ``item_item_max_items`` (models/retrieval/item_item.py)."""


def item_item_reasons(items: Sequence[int], settings: dict[str, str] = CHEAP_SETTINGS) -> dict[str, list[str]]:
    """The steps that fit dense item x item models: superlinear in items below the cap, flat in them above it."""
    env = "RECSYS_ITEM_ITEM_MAX_ITEMS"
    cap = int(settings.get(env, Settings.model_fields["item_item_max_items"].default))
    above = [n for n in items if n > cap]
    where = f", binding from {min(above):,} items on" if above else ""
    reason = f"{env}={cap} (default{where}; below it the dense item-item fits grow as items^3: EASE^R's inverse)"
    return {name: [reason] for name in ITEM_ITEM_STEPS}


def caps(users: Sequence[int], settings: dict[str, str] = CHEAP_SETTINGS) -> dict[str, list[str]]:
    """For each stage (and ``stage/task``), the settings that bound its work whatever the size (a user cap below
    the sizes' users, a time budget), one short reason each. Values as the bench's pipeline sees them:
    ``settings`` over ``Settings``' defaults (the child's environment has no other RECSYS_* variable)."""
    found: dict[str, list[str]] = {}
    for cap in CAPS:
        env = f"RECSYS_{cap.field.upper()}"
        value = settings.get(env, Settings.model_fields[cap.field].default)
        if value is None:
            continue
        source = "CHEAP_SETTINGS" if env in settings else "default"
        binding = [u for u in users if float(value) < u] if cap.users else list(users)
        if not binding:
            continue  # more users allowed than there are: the stage grows with them
        where = "" if len(binding) == len(users) else f" from {min(binding):,} users on"
        reason = f"{env}={value} ({source}{where})" if cap.users else f"time budget {env}={value} s ({source})"
        for name in cap.covers:
            found.setdefault(name, []).append(reason)
    return found


# ---- the sizes ---------------------------------------------------------------------------------------------------


def size_record(catalogue: Catalogue, state_dir: Path, marker: dict[str, Any]) -> dict[str, Any]:
    """What one size measured: the marker's totals and stage figures (older markers: re-read from the log) and
    the per-task times from the state's Prefect database."""
    log_path = state_dir / "pipeline.log"
    record: dict[str, Any] = {
        "catalogue": asdict(catalogue),
        "state_dir": str(state_dir),
        "reused": bool(marker.get("reused")),
        "finished_at": marker.get("finished_at"),
        "version": marker.get("version"),
        "measured_with": marker.get("measured_with"),
        "pipeline_seconds": marker.get("pipeline_seconds"),
        "pipeline_peak_mb": marker.get("pipeline_peak_mb"),
        "stage_seconds": marker.get("pipeline_stage_seconds") or pipeline_summary(log_path, SECONDS_LINE),
        "stage_peak_mb": marker.get("pipeline_stage_peak_mb") or pipeline_summary(log_path, PEAK_MB_LINE),
        "load_before": marker.get("load_before"),
        "load_after": marker.get("load_after"),
    }
    try:
        record["prefect"] = task_durations(state_dir / "prefect" / "prefect.db")
    except (OSError, LookupError, sqlite3.Error) as error:
        record["prefect"] = {"error": f"{type(error).__name__}: {error}"}
    return record


def _series(records: list[dict[str, Any]], names: list[str], value: Any) -> dict[str, list[Any]]:
    return {name: [value(r, name) for r in records] for name in names}


def analyse(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Exponents and flags of every stage and task over the sizes that were measured."""
    items = [r["catalogue"]["items"] for r in records]
    interactions = [r["catalogue"]["interactions"] for r in records]
    users = [r["catalogue"]["users"] for r in records]
    bounded = caps(users)
    for name, reasons in item_item_reasons(items).items():
        bounded.setdefault(name, []).extend(reasons)
    stage_names = list(dict.fromkeys(n for r in records for n in r["stage_seconds"]))
    seconds = _series(records, stage_names, lambda r, n: r["stage_seconds"].get(n))
    peak = _series(records, stage_names, lambda r, n: r["stage_peak_mb"].get(n))
    stages = {
        name: {"seconds": seconds[name], "peak_mb": peak[name], **growth(items, interactions, seconds[name]),
               "peak_mb_exponent_items": fit_exponent(items, peak[name]), "why": bounded.get(name, [])}
        for name in stage_names
    }  # fmt: skip
    total = [r.get("pipeline_seconds") for r in records]
    total_peak = [r.get("pipeline_peak_mb") for r in records]
    stages_total = {"seconds": total, "peak_mb": total_peak, **growth(items, interactions, total),
                    "peak_mb_exponent_items": fit_exponent(items, total_peak)}  # fmt: skip
    task_tables = [r["prefect"].get("tasks", {}) for r in records]
    task_names = list(dict.fromkeys(n for t in task_tables for n in t))
    tasks = {}
    for name in task_names:
        rows = [t.get(name) for t in task_tables]
        task_seconds = [row["seconds"] if row else None for row in rows]
        task_cached = [bool(row and row["cached"]) for row in rows]
        tasks[name] = {"seconds": task_seconds, "cached": task_cached, "runs": [row["runs"] if row else None for row in rows],
                       **growth(items, interactions, task_seconds, task_cached), "why": bounded.get(name, [])}  # fmt: skip
    return {"items": items, "users": users, "interactions": interactions, "stages": stages,
            "total": stages_total, "tasks": tasks}  # fmt: skip


def plot(analysis: dict[str, Any], path: Path) -> Path:
    """Seconds per stage against items, log-log, with a dashed slope-1 line through the total's first point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = analysis["items"]
    figure, axes = plt.subplots(figsize=(8, 5.5))
    lines = {**analysis["stages"], "total": analysis["total"]}
    for name, stage in lines.items():
        points = [(x, y) for x, y in zip(items, stage["seconds"], strict=True) if y]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        exponent = stage.get("exponent_items")
        label = f"{name} (slope {exponent:.2f})" if exponent is not None else name
        style = {"linewidth": 2.5, "color": "black"} if name == "total" else {}
        axes.plot(xs, ys, marker="o", label=label, **style)
    first_total = next((y for y in analysis["total"]["seconds"] if y), None)
    if first_total and len(items) > 1:
        reference = [first_total * x / items[0] for x in items]
        axes.plot(items, reference, linestyle="--", color="grey", zorder=3, label="slope 1 (linear)")  # over total
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xticks(items, [f"{x / 1000:g} k" if x < 1_000_000 else f"{x / 1_000_000:g} M" for x in items])
    axes.minorticks_off()
    axes.set_xlabel("catalogue items (users and interactions scaled alike)")
    axes.set_ylabel("wall seconds")
    axes.set_title("Offline pipeline: seconds per stage")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def run_pipeline_cost(
    sizes: Sequence[int], root: Path | None = None, rebuild: bool = False, out_dir: Path | None = None
) -> dict[str, Any]:
    """Build (or reuse) a bench state per size and fit each stage's growth; a size whose pipeline fails is
    reported with its error and left out of the fit (a failure at 1 M is itself a result)."""
    root = root or bench_root()
    out_dir = out_dir or root
    records, failures = [], {}
    for items in sorted(sizes):
        catalogue = Catalogue.scaled(items)
        try:
            state_dir, marker = ensure_state(catalogue, root, rebuild)
        except Exception as error:  # noqa: BLE001 - the other sizes still give a curve
            log(f"pipeline at {items} items failed: {error}")
            failures[str(items)] = f"{type(error).__name__}: {str(error)[:1000]}"
            continue
        records.append(size_record(catalogue, state_dir, marker))
    if not records:
        raise RuntimeError(f"no size could be measured: {failures}")
    analysis = analyse(records)
    figure = plot(analysis, out_dir / PLOT_FILE)
    return {
        "sizes": [r["catalogue"] for r in records],
        "failed_sizes": failures,
        "records": records,
        **analysis,
        "superlinear_above": SUPERLINEAR,
        "too_short_seconds": TOO_SHORT_SECONDS,
        "settings": CHEAP_SETTINGS,
        "plot": PLOT_FILE,
        "plot_path": str(figure),
    }


def main(argv: list[str] | None = None) -> int:
    from bench.report import pipeline_lines

    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None, help=f"comma-separated items (default {','.join(map(str, SCALES))})")
    parser.add_argument("--quick", action="store_true", help=f"sizes {','.join(map(str, QUICK_SCALES))}")
    parser.add_argument("--root", type=Path, default=None, help="folder of the bench states (default <state>/bench)")
    parser.add_argument("--out", type=Path, default=None, help="folder of the plot (default the root)")
    parser.add_argument("--rebuild", action="store_true", help="run the pipeline even where a state exists")
    args = parser.parse_args(argv)
    sizes = parse_sizes(args.sizes) if args.sizes else (QUICK_SCALES if args.quick else SCALES)
    result = run_pipeline_cost(sizes, args.root, args.rebuild, args.out)
    print("\n".join(pipeline_lines(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
