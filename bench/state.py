"""The bench's own state folders: the demo catalog scaled up, run through the whole pipeline once and reused.

``<state>/bench/state-demo-<items>x<users>x<interactions>/`` holds a normal state folder (data, Feast store,
MLflow, Prefect, published versions). A marker file records the sizes, the settings and how long the pipeline
took; a later bench run with the same sizes and settings reuses the folder instead of running the pipeline again.

``python -m bench.state [--quick]`` builds (or checks) the folder on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.common import load_reading, log
from flows.common import code_fingerprint
from models.settings import PROJECT_ROOT, Settings

MARKER = "bench-state.json"
PEAK_SAMPLE_SECONDS = 1.0
"""How often the pipeline's process tree is sampled for its peak RSS."""


@dataclass(frozen=True)
class Catalogue:
    items: int
    users: int
    interactions: int

    @property
    def name(self) -> str:
        return f"state-demo-{self.items}x{self.users}x{self.interactions}"

    @classmethod
    def scaled(cls, items: int) -> Catalogue:
        """The demo's default catalogue (``Settings``' demo_items / demo_users / demo_interactions) scaled to
        ``items``: users and interactions keep their ratio to items, so sizes differ by one factor only."""
        fields = Settings.model_fields
        base_items = int(fields["demo_items"].default)
        users = round(items * int(fields["demo_users"].default) / base_items)
        interactions = round(items * int(fields["demo_interactions"].default) / base_items)
        return cls(items, users, interactions)


FULL = Catalogue.scaled(100_000)  # 100 000 items, 25 000 users, 1 500 000 interactions
QUICK = Catalogue.scaled(5_000)  # 5 000 items, 1 250 users, 75 000 interactions
"""Scaled like the demo's default catalogue, so the pipeline section's cost curve builds the very states the
serving sections reuse."""

SECONDS_LINE = "per-stage seconds:"
PEAK_MB_LINE = "per-stage peak memory (MB):"
"""The prefixes of the pipeline's two summary lines (``flows/cli.py:print_summary``)."""

CHEAP_SETTINGS = {
    "RECSYS_TRAIN_MAX_USERS": "800",
    "RECSYS_EVAL_MAX_USERS": "200",
    "RECSYS_RECALL_MAX_USERS": "200",
    "RECSYS_ABLATION": "false",
    "RECSYS_BUILD_BENTO": "false",
    "RECSYS_EMBEDDING_BACKEND": "static",
    "RECSYS_TASK_PROCESSES": "true",
}
"""Cheap pipeline settings: the bench needs a served version of the right size, not a thorough evaluation. The
static token-table encoder embeds 1 M item texts in about a minute; the int8 transformer took 650 s for 100 k, so
≈ 1 h 45 min for 1 M on two cores, past the 1 M build's hour before any other step. Each heavy step runs in a
process of its own (``flows.runtime.run_step``), so each stage's peak is that step's own, not heap an earlier step
left in one long-lived process."""


def bench_root(settings: Settings | None = None) -> Path:
    return (settings or Settings()).state_dir.resolve() / "bench"


def pipeline_env(catalogue: Catalogue, state_dir: Path) -> dict[str, str]:
    """The RECSYS_* (and tool home) variables the pipeline runs with for this catalogue."""
    return {
        "RECSYS_STATE_DIR": str(state_dir),
        "RECSYS_DEMO_ITEMS": str(catalogue.items),
        "RECSYS_DEMO_USERS": str(catalogue.users),
        "RECSYS_DEMO_INTERACTIONS": str(catalogue.interactions),
        **CHEAP_SETTINGS,
    }


def _clean_environ() -> dict[str, str]:
    """The parent's environment without RECSYS_*/tool homes that would point the child at another state."""
    drop = ("PREFECT_HOME", "PREFECT_API_URL", "BENTOML_HOME", "MLFLOW_TRACKING_URI")
    return {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_") and k not in drop}


def read_marker(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / MARKER
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def measured_with(state_dir: Path) -> dict[str, Any] | None:
    """The code the state's newest evaluation report was measured with (``details.measured_with``: code
    fingerprint and commit, written by the pipeline as it started), or None when there is no readable report."""
    reports = sorted((state_dir / "reports").glob("*/*/evaluation.json"), key=lambda path: path.stat().st_mtime)
    for report in reversed(reports):
        try:
            found = json.loads(report.read_text()).get("details", {}).get("measured_with")
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(found, dict):
            return found
    return None


def why_not_reusable(
    marker: dict[str, Any] | None, catalogue: Catalogue, built_with: dict[str, Any] | None
) -> str | None:
    """None when a finished bench state measured this catalogue with the cheap settings and this library code;
    otherwise what differs."""
    if marker is None:
        return "no finished bench run recorded"
    if marker.get("catalogue") != asdict(catalogue) or marker.get("settings") != CHEAP_SETTINGS:
        return "built for other sizes or settings"
    code = code_fingerprint()
    built = (built_with or {}).get("code_fingerprint")
    return None if built == code else f"built by other code ({built}, now {code})"


def ensure_state(
    catalogue: Catalogue, root: Path | None = None, rebuild: bool = False, any_code: bool = False
) -> tuple[Path, dict[str, Any]]:
    """The state folder for ``catalogue`` with a published version; runs the pipeline if needed.

    A state is reused only when its pipeline ran with the same sizes, settings and library code (the code
    fingerprint of its evaluation report): figures from older code would otherwise pass as this code's.
    With ``any_code`` a state built by other library code is reused too (to measure serving-code changes
    without a rebuild); the description then says which code built it (``built_by_other_code``).
    Returns the folder and a description: whether it was reused, the code it measured, and the pipeline's wall
    time when it ran.
    """
    root = root or bench_root()
    state_dir = (root / catalogue.name).resolve()
    env = pipeline_env(catalogue, state_dir)
    marker = read_marker(state_dir)
    current = state_dir / "versions" / "demo" / "current"  # the bench catalogues are demo datasets
    built_with = measured_with(state_dir)
    if not rebuild and current.exists():
        stale = why_not_reusable(marker, catalogue, built_with)
        other_code = stale is not None and any_code and stale.startswith("built by other code")
        if stale is None or other_code:
            assert marker is not None
            log(f"reusing {state_dir} (pipeline took {marker['pipeline_seconds']:.0f} s on {marker['finished_at']})"
                + (f"; {stale}" if other_code else ""))  # fmt: skip
            return state_dir, {**marker, "reused": True, "state_dir": str(state_dir), "measured_with": built_with,
                               "built_by_other_code": stale if other_code else None}  # fmt: skip
        log(f"not reusing {state_dir}: {stale}")

    resumed = state_dir.exists()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "pipeline.log"
    child_env = {
        **_clean_environ(),
        **env,
        "PREFECT_HOME": str(state_dir / "prefect"),
        "BENTOML_HOME": str(state_dir / "bentoml"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "flows.cli", "pipeline", "--dataset", "demo"]
    log(
        f"running the pipeline on a {catalogue.items}-item demo catalog ({catalogue.users} users, "
        f"{catalogue.interactions} interactions) into {state_dir}; log: {log_path}"
    )
    load_before = load_reading()
    started = time.perf_counter()
    peak_bytes = 0
    with open(log_path, "ab") as out:
        out.write(f"\n=== {datetime.now(UTC).isoformat()} {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT)
        next_beat = time.perf_counter() + 60
        while process.poll() is None:
            # The tree's RSS is sampled, not read from getrusage(RUSAGE_CHILDREN).ru_maxrss: that is the peak of
            # the single largest descendant (not the sum over the pipeline and its Dask workers) and a high-water
            # mark over every child this process ever waited for, so no difference of two readings isolates one
            # run. Sampling sums the tree as flows/memory.py does for the per-stage figures (shared pages count
            # in every process), but misses peaks shorter than the interval.
            peak_bytes = max(peak_bytes, tree_rss_bytes(process.pid))
            time.sleep(PEAK_SAMPLE_SECONDS)
            if time.perf_counter() >= next_beat:
                next_beat += 60
                log(f"  pipeline running for {time.perf_counter() - started:.0f} s: {_last_line(log_path)}")
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(
            f"pipeline failed (exit {process.returncode}) after {seconds:.0f} s; end of {log_path}:\n{tail}"
        )
    if not current.exists():
        raise RuntimeError(f"pipeline finished but {current} does not exist")
    marker = {
        "catalogue": asdict(catalogue),
        "settings": CHEAP_SETTINGS,
        "pipeline_seconds": round(seconds, 1),
        "pipeline_stage_seconds": pipeline_summary(log_path, SECONDS_LINE),
        "pipeline_stage_peak_mb": pipeline_summary(log_path, PEAK_MB_LINE),
        "pipeline_peak_mb": round(peak_bytes / 2**20, 1),
        "pipeline_peak_mb_sampled_every_s": PEAK_SAMPLE_SECONDS,
        "resumed_partial_state": resumed,
        "load_before": load_before,
        "load_after": load_reading(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": os.readlink(current),
    }
    (state_dir / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    log(f"pipeline finished in {seconds:.0f} s, version {marker['version']}")
    return state_dir, {
        **marker,
        "reused": False,
        "state_dir": str(state_dir),
        "measured_with": measured_with(state_dir),
    }


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4000))
            lines = [line for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1][:160] if lines else ""
    except OSError:
        return ""


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and its live descendants (0 once it has ended)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:  # ended between listing and reading
            continue
    return total


def parse_stage_values(text: str) -> dict[str, float]:
    """``"data 3.1, stage1 20.0"`` → ``{"data": 3.1, "stage1": 20.0}``; a part without a number is skipped."""
    stages: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.strip().rpartition(" ")
        try:
            stages[name] = float(value)
        except ValueError:
            continue
    return stages


def pipeline_summary(log_path: Path, prefix: str = SECONDS_LINE) -> dict[str, float]:
    """The pipeline's own per-stage figures from the last summary line starting with ``prefix`` (the log is
    appended to by every run of the folder, so the last one is the latest run's); {} when there is none."""
    if not log_path.exists():
        return {}
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if line.startswith(prefix):
            return parse_stage_values(line[len(prefix) :])
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"the small catalogue {QUICK}")
    parser.add_argument("--rebuild", action="store_true", help="run the pipeline even if the folder exists")
    args = parser.parse_args(argv)
    state_dir, info = ensure_state(QUICK if args.quick else FULL, rebuild=args.rebuild)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
