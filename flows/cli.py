"""Command-line entry point: ``recsys <command>`` (also ``python -m flows.cli``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.profiles import PROFILES, apply_profile
from models.data.contract import DataValidationError
from models.data.datasets import DATASET_KINDS, load_dataset
from models.data.tables import save_dataset
from models.settings import Settings

if TYPE_CHECKING:
    import pandas as pd


def command_data(args: argparse.Namespace, settings: Settings) -> int:
    """Load or generate a dataset, validate it, write it under the state folder and print its summary."""
    started = time.perf_counter()
    try:
        dataset = load_dataset(args.dataset, settings, args.data_dir)
    except (DataValidationError, ValueError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 2
    folder = save_dataset(dataset, settings.dataset_dir(dataset.name))
    summary = dataset.summary()
    print(f"dataset '{dataset.name}' validated and written to {folder} in {time.perf_counter() - started:.1f} s")
    print(json.dumps(summary, indent=2))
    return 0


def command_pipeline(args: argparse.Namespace, settings: Settings) -> int:
    """Run the whole pipeline flow and print where to look."""
    from flows.runtime import prepare_environment

    settings = apply_profile(settings, args.profile)
    prepare_environment(settings)
    from flows.pipeline import pipeline_flow

    started = time.perf_counter()
    summary = pipeline_flow(args.dataset, str(args.data_dir) if args.data_dir else None, settings, args.force,
                            args.profile)  # fmt: skip
    print_summary(summary, time.perf_counter() - started, settings)
    return 0


def for_namespace(args: argparse.Namespace, settings: Settings) -> Settings | None:
    """The settings of the namespace the command names (``--namespace``, else RECSYS_NAMESPACE, else the only one
    published); None, with the reason on stderr, when there is no such namespace."""
    from models.files import ArtifactError
    from models.recommender.versions import choose_namespace, published_namespaces

    try:
        namespace = choose_namespace(settings.versions_root, args.namespace or settings.namespace)
    except ArtifactError as error:
        print(error, file=sys.stderr)
        return None
    published = published_namespaces(settings.versions_root)
    if namespace not in published:  # a typo would otherwise read as an empty history
        print(f"{settings.versions_root}: no namespace '{namespace}' (published: {', '.join(published) or 'none'})",
              file=sys.stderr)  # fmt: skip
        return None
    return settings.model_copy(update={"namespace": namespace})


def command_release(args: argparse.Namespace, settings: Settings) -> int:
    """``promote`` / ``rollback``: move the namespace's ``current`` pointer (a running service follows within its
    reload interval, or at once on POST /reload) and the registry's ``champion`` alias with it."""
    from models.files import ArtifactError
    from models.recommender.versions import VersionStore

    chosen = for_namespace(args, settings)
    if chosen is None:
        return 2
    settings = chosen
    try:
        store = VersionStore(settings.versions_dir)
        reason = args.reason or f"{args.command} from the command line"
        version = store.promote(reason) if args.command == "promote" else store.rollback(reason)
    except ArtifactError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"{settings.namespace}: now serving {version} ({args.command})")
    from flows.registry import sync_champion_alias

    print(sync_champion_alias(settings, store))
    return 0


def command_releases(args: argparse.Namespace, settings: Settings) -> int:
    """The namespace's pointers and its release history."""
    from models.recommender.versions import CHALLENGER, CURRENT, PREVIOUS, VersionStore

    chosen = for_namespace(args, settings)
    if chosen is None:
        return 2
    namespace = str(chosen.namespace)
    store = VersionStore(chosen.versions_dir)
    pointers = {name: (p.name if (p := store.pointed(name)) else None) for name in (CURRENT, CHALLENGER, PREVIOUS)}
    print(json.dumps({"namespace": namespace, **pointers, "history": store.releases()[-args.last :]}, indent=2))
    return 0


def command_variants(args: argparse.Namespace, settings: Settings) -> int:
    """Champion vs challenger from the namespace's impression and live logs: a table, then the comparison as JSON."""
    from flows.variants import compare_variants, load_variant_logs, variants_table
    from models.recommender.versions import CHALLENGER, CURRENT, VersionStore

    chosen = for_namespace(args, settings)
    if chosen is None:
        return 2
    settings, namespace = chosen, str(chosen.namespace)
    store = VersionStore(settings.versions_dir)
    active = [p.name for p in (store.pointed(CURRENT), store.pointed(CHALLENGER)) if p is not None]
    shown, shadow, events = load_variant_logs(settings, namespace, active)
    comparison = compare_variants(shown, shadow, events, settings.impression_attribution_hours * 3600.0, args.k)
    print(variants_table(comparison))
    print(json.dumps({"namespace": namespace, **comparison}, indent=2))
    return 0


def command_quality(args: argparse.Namespace, settings: Settings) -> int:
    """Write the README's quality tables from evaluation reports (the newest per dataset when none is named)."""
    from flows.quality import newest_reports, write_quality

    try:
        block = write_quality(args.reports or newest_reports(settings.reports_dir), args.readme)
    except (FileNotFoundError, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    print(block)
    return 0


RUN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("run_id", "run_id", "{}"),
    ("start (UTC)", "start_time", "{:%Y-%m-%d %H:%M:%S}"),
    ("ndcg@10 two-stage", "metrics.ndcg_at_10_two_stage", "{:.4f}"),
    ("best peer", "tags.best_peer", "{}"),
    ("ndcg@10 peer", "metrics.ndcg_at_10_best_peer", "{:.4f}"),
    ("ratio", "metrics.two_stage_vs_peer_ndcg_ratio", "{:.2f}x"),
    ("recall@500 merged", "metrics.recall_at_500_merged", "{:.4f}"),
    ("K", "metrics.k_candidates", "{:.0f}"),
    ("release", "tags.release", "{}"),
    ("data", "tags.data_fingerprint", "{}"),
)
"""The ``runs`` table: header, column of ``mlflow.search_runs``' frame, format (a missing value prints as '-')."""


def command_runs(args: argparse.Namespace, settings: Settings) -> int:
    """The re-ranker runs of a dataset's MLflow experiment, newest first, with their headline metrics side by side."""
    database = settings.mlflow_dir / "mlflow.db"
    if not database.exists():
        print(f"no MLflow store at {database}: run the pipeline first", file=sys.stderr)
        return 2
    import mlflow

    from flows.tracking import experiment_url, tracking_uri

    mlflow.set_tracking_uri(tracking_uri(settings.mlflow_dir))
    experiment = f"recsys-{args.dataset}"
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        print(f"no experiment '{experiment}' in {database}", file=sys.stderr)
        return 2
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.stage = 'reranker'",
                              order_by=["attributes.start_time DESC"], max_results=args.limit)  # fmt: skip
    print(f"experiment '{experiment}' ({database}): {len(runs)} re-ranker run(s), newest first")
    print(runs_table(runs))
    print(f"in the MLflow UI (make ui): {experiment_url(found.experiment_id)}")
    return 0


def runs_table(runs: pd.DataFrame) -> str:
    """``mlflow.search_runs``' frame as a fixed-width text table (runs without a column's value show '-')."""

    def cell(value: Any, form: str) -> str:
        if value is None or (isinstance(value, float) and value != value):  # NaN: not logged by that run
            return "-"
        return form.format(value)

    rows = [[header for header, _, _ in RUN_COLUMNS]]
    for _, run in runs.iterrows():
        rows.append([cell(run.get(column), form) for _, column, form in RUN_COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(RUN_COLUMNS))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)  # fmt: skip


def print_summary(summary: dict, seconds: float, settings: Settings) -> None:
    from flows.quality import peer_label

    methods = summary["methods"]
    print(f"\n=== pipeline on '{summary['dataset']}' finished in {seconds:.0f} s ===")
    print("per-stage seconds: " + ", ".join(f"{k} {v}" for k, v in summary["timings_s"].items()))
    print("per-stage peak memory (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in summary["peak_memory_mb"].items()))
    print(
        "stage-1 recall (merged): " + ", ".join(f"@{k} {v:.3f}" for k, v in summary["stage1_recall"]["merged"].items())
    )
    conversions = all("conversion_ndcg@10" in values for values in methods.values())
    print(f"{'method':<40}{'NDCG@10':>10}{'Recall@10':>11}{'MAP@10':>9}" + ("  NDCG@10 carts+purchases" * conversions))
    for name, values in methods.items():
        line = f"{name:<40}{values['ndcg@10']:>10.4f}{values['recall@10']:>11.4f}{values['map@10']:>9.4f}"
        print(line + (f"{values['conversion_ndcg@10']:>25.4f}" if conversions else ""))
    gain = summary["two_stage_vs_best_peer"]
    print(
        f"two-stage / {peer_label(summary['tuning_trials'])} ({gain['peer']}) NDCG@10: {gain['ndcg@10_ratio']:.2f}x "
        f"(95% interval over test users {gain['ci95'][0]:.2f}-{gain['ci95'][1]:.2f}x)"
    )
    print(f"served: K = {summary['served']['k_candidates']} candidates, rules {summary['served']['rules']}")
    registration = summary["registration"]
    release = summary["release"]
    role = "champion: served" if release["publish"] else "challenger: not served (shadow / split, or `recsys promote`)"
    print(f"model: {registration['model']} v{registration['version']}")
    print(f"version {Path(summary['version']).name} in namespace '{summary['namespace']}' is the {role}")
    print(f"release decision: {release['reason']}")
    if summary.get("bento"):
        print(
            f"bento: {summary['bento']}  (BENTOML_HOME={os.environ.get('BENTOML_HOME')}; `bentoml serve {summary['bento']}`)"
        )
    print(f"evaluation report: {summary['report_path']}")
    from flows.tracking import MLFLOW_UI, experiment_links

    links = [link.split(": ", 1)[1] for link in experiment_links(settings.mlflow_dir)
             if link.startswith(f"recsys-{summary['dataset']}: ")]  # fmt: skip
    mlflow_url = links[0] if links else MLFLOW_UI
    print(f"UIs: make ui  (Prefect http://127.0.0.1:4200, MLflow {mlflow_url}; state in {settings.state_dir})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="generate or load a dataset, validate it, save it, print a summary")
    data.add_argument("--dataset", choices=DATASET_KINDS, default="demo")
    data.add_argument("--data-dir", type=Path, default=None, help="folder of the MovieLens or contract files")
    data.set_defaults(handler=command_data)
    pipeline = commands.add_parser("pipeline", help="run the whole pipeline flow and publish a version")
    pipeline.add_argument("--dataset", choices=DATASET_KINDS, default="demo")
    pipeline.add_argument("--data-dir", type=Path, default=None, help="folder of the MovieLens or contract files")
    pipeline.add_argument("--force", action="store_true", help="publish even if it does not beat the champion")
    pipeline.add_argument("--profile", choices=list(PROFILES), default="full",
                          help="settings to start from: 'quick' publishes a first look in about a minute and a half "
                          "(untuned, static text vectors; RECSYS_* variables still win), see flows/profiles.py")  # fmt: skip
    pipeline.set_defaults(handler=command_pipeline)
    for name, text in (("promote", "make the namespace's challenger its champion (served)"),
                       ("rollback", "serve the version the champion replaced")):  # fmt: skip
        release = commands.add_parser(name, help=text)
        release.add_argument("--namespace", default=None, help="default: RECSYS_NAMESPACE, else the only one")
        release.add_argument("--reason", default="", help="recorded in the release history")
        release.set_defaults(handler=command_release)
    releases = commands.add_parser("releases", help="the namespace's champion, challenger, previous and history")
    releases.add_argument("--namespace", default=None, help="default: RECSYS_NAMESPACE, else the only one")
    releases.add_argument("--last", type=int, default=20, help="history entries shown")
    releases.set_defaults(handler=command_releases)
    variants = commands.add_parser(
        "variants", help="champion vs challenger: CTR, conversion, latency, shadow agreement"
    )
    variants.add_argument("--namespace", default=None, help="default: RECSYS_NAMESPACE, else the only one")
    variants.add_argument("--k", type=int, default=10, help="depth of the shadow lists' overlap and rank correlation")
    variants.set_defaults(handler=command_variants)
    quality = commands.add_parser("quality", help="write the README's quality tables from evaluation.json reports")
    quality.add_argument("reports", type=Path, nargs="*", help="evaluation.json files (default: newest per dataset)")
    quality.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[1] / "README.md")
    quality.set_defaults(handler=command_quality)
    runs = commands.add_parser("runs", help="compare the re-ranker runs of a dataset's MLflow experiment")
    runs.add_argument("--dataset", default="demo", help="the dataset's name (its experiment is recsys-<name>)")
    runs.add_argument("--limit", type=int, default=20, help="newest runs shown")
    runs.set_defaults(handler=command_runs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    return int(args.handler(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
