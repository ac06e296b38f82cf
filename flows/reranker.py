"""Re-ranker flow: training set from stage-1 candidates → LightGBM LambdaRank → joint evaluation and K sizing →
the release decision against the champion (the namespace's served version, on the validation cut) → MLflow run and
registry. The ``champion`` alias moves when the version is published (flows/pipeline.py), not here."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightgbm
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from prefect import flow, task
from prefect.artifacts import create_table_artifact

from flows.common import CACHED, code_version, settings_key, slug, work_dir, work_key
from flows.features import apply_definitions
from flows.profiles import FIRST_LOOK, built_profile
from flows.runtime import run_step
from flows.tracking import (
    configure_mlflow,
    figure_bar,
    figure_lines,
    log_dataset,
    log_figure,
    recall_curve_figure,
    tracking_uri,
)
from models.data.contract import Dataset
from models.data.splits import Split, evaluation_split
from models.data.tables import load_saved_dataset
from models.evaluation.offline import evaluation_step
from models.evaluation.release import release_decision
from models.features.spec import FeatureSpec
from models.files import ArtifactError, write_json
from models.heap import release_free_memory
from models.live.impressions import impressions_dir, read_impressions
from models.live.ingest import read_live_log
from models.live.log import EVENT
from models.ranking.ranker import Ranker
from models.recommender.versions import CURRENT, VersionStore, read_manifest
from models.settings import Settings
from models.training.impressions import LoggedLists
from models.training.steps import holdout_ndcg, load_ranker, train_step, training_step

DONE = "done.json"
REPORT_FILE = "evaluation.json"


def registered_model_name(settings: Settings, dataset: str) -> str:
    """One registered model per namespace: the demo's is ``reranker``; others get the namespace as suffix."""
    namespace = settings.deployment(dataset)
    return settings.registered_model if namespace == "demo" else f"{settings.registered_model}-{slug(namespace)}"


@task(**CACHED)
def build_training_set(
    dataset_dir: str, fingerprint: str, vectors_path: str, peer_params: dict[str, Any], config: dict[str, Any],
    settings: Settings,
) -> str:  # fmt: skip
    dataset, split = catalog_and_split(dataset_dir, settings)
    logged = logged_lists(settings, dataset.name) if settings.training_impressions else None
    served_key = [len(logged.shown), len(logged.events)] if logged is not None else None
    key = work_key(fingerprint, Path(vectors_path).name, peer_params, config, served_key)
    out = work_dir(settings, "training_set", key)
    if not (out / DONE).exists():
        apply_definitions(dataset.name, settings)
        stats = training_step(dataset, split, np.load(vectors_path), peer_params, settings, out, logged)
        write_json(stats, out / DONE)
    del dataset, split, logged
    release_free_memory()  # the next task (the evaluation) fits stage 1 again in this process
    return str(out)


def catalog_and_split(dataset_dir: str, settings: Settings) -> tuple[Dataset, Split]:
    """The saved dataset's items and users, and its events split by the protocol (train / test). The whole event log
    is dropped once split, so a step holds the events once: at 1 M items and 15 M events the frame is 0.7 GB, which
    the re-ranker's steps held beside its two halves through their stage-1 fits (their memory peaks)."""
    dataset = load_saved_dataset(Path(dataset_dir))
    return dataset.catalog(), evaluation_split(dataset.interactions, settings.test_fraction)


def logged_lists(settings: Settings, dataset: str) -> LoggedLists:
    """The impressions the service logged for ``dataset`` and the events of its live log (with their request ids)."""
    shown, names = read_impressions(impressions_dir(settings, dataset))
    records = read_live_log(settings, dataset)
    events = pd.DataFrame([record.body for record in records if record.kind == EVENT])
    return LoggedLists(shown, names, events, settings.impression_attribution_hours * 3600.0)


@task(**CACHED)
def train_reranker(training_dir: str, config: dict[str, Any], settings: Settings) -> str:
    out = work_dir(settings, "ranker", work_key(Path(training_dir).name, config))
    if not (out / DONE).exists():
        section = train_step(Path(training_dir), settings, out)
        write_json({"k_candidates": section["k_candidates"]}, out / DONE)
    return str(out)


def served_champion(settings: Settings) -> tuple[str | None, Ranker | None]:
    """The namespace's champion — the version ``current`` names, which is what is served — and its re-ranker
    (None when it cannot be loaded: then it cannot be compared, which never counts as a win)."""
    current = VersionStore(settings.versions_dir).pointed(CURRENT)
    if current is None:
        return None, None
    try:
        manifest = read_manifest(current)
        spec = FeatureSpec.from_json(manifest["features"]["spec"])
        return str(manifest["version"]), Ranker.load(current / "ranker", manifest["ranker"], spec.names)
    except (ArtifactError, KeyError, ValueError) as error:
        print(f"champion {current.name} cannot be loaded for the comparison: {error}")
        return current.name, None


def served_profile(settings: Settings) -> str | None:
    """The profile the served version was built with (older versions: ``full``); None when nothing is served."""
    current = VersionStore(settings.versions_dir).pointed(CURRENT)
    if current is None:
        return None
    try:
        return built_profile(read_manifest(current).get("build", {}))
    except ArtifactError:
        return None  # unreadable: not known to be a first look


@task
def compare_with_champion(training_dir: str, ranker_dir: str, settings: Settings, force: bool,
                          profile: str = "full") -> dict[str, Any]:  # fmt: skip
    """The release decision: NDCG@10 of the new ranker and of the champion re-ranking the same candidates of the
    release-holdout users (neither trained on them), with a paired interval (models/evaluation/release.py). A
    champion that is a first look (``--profile quick``) is a stand-in, not a champion to beat: a run of another
    profile replaces it, and the comparison is still made and recorded."""
    champion_version, champion = served_champion(settings)
    new_ranker, _, section = load_ranker(Path(ranker_dir))
    new, scores = holdout_ndcg(Path(training_dir), [new_ranker, champion], int(section["k_candidates"]),
                               settings.release_holdout_share)  # fmt: skip
    assert new is not None, "the new ranker was trained on this training set"
    stand_in = profile != FIRST_LOOK and served_profile(settings) == FIRST_LOOK
    decision = release_decision(new, scores, settings.release_min_gain, has_champion=champion_version is not None,
                                force=force or stand_in, seed=settings.seed)  # fmt: skip
    if stand_in and not force:
        decision = replace(decision, reason=f"replaces the first look {champion_version} (--profile {FIRST_LOOK}: a "
                           f"stand-in, not a champion to beat); {decision.reason}")  # fmt: skip
    print(f"release decision: {'publish' if decision.publish else 'challenger'} — {decision.reason}")
    return {"champion_version": champion_version, "validation_ndcg@10": section["validation_ndcg"],
            "holdout_ndcg@10": float(new.mean()) if len(new) else None,
            "champion_holdout_ndcg@10": float(scores.mean()) if scores is not None and len(scores) else None,
            "decision": decision.as_dict()}  # fmt: skip


@task(**CACHED)
def evaluate_reranker(
    dataset_dir: str, vectors_path: str, ranker_dir: str, training_dir: str, config: dict[str, Any],
    settings: Settings,
) -> dict[str, Any]:  # fmt: skip
    """The test evaluation: touched once per configuration (a re-run with the same inputs reuses it)."""
    dataset, split = catalog_and_split(dataset_dir, settings)
    report = evaluation_step(dataset, split, np.load(vectors_path), Path(ranker_dir), Path(training_dir), settings)
    del dataset, split
    release_free_memory()
    return report


def headline_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The numbers a reader compares runs by, as top-level metrics the runs table sorts on: NDCG@10 of the two
    stages and of the best tuned peer (named by the run's ``best_peer`` tag), stage 1's merged Recall@500 and the
    chosen K."""
    peer = report["two_stage_vs_best_peer"]["peer"]
    return {
        "ndcg_at_10_two_stage": float(report["methods"]["two_stage"]["ndcg@10"]),
        "ndcg_at_10_best_peer": float(report["methods"][peer]["ndcg@10"]),
        "recall_at_500_merged": float(report["stage1_recall_all_k"]["merged"]["500"]),
        "k_candidates": float(report["k_candidates"]),
    }


@task
def log_and_register(
    report: dict[str, Any], comparison: dict[str, Any], training_dir: str, ranker_dir: str, fingerprint: str,
    settings: Settings, dataset_dir: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One MLflow run: the dataset as its input, params, headline and detailed metrics, plots; register the model;
    the ``champion`` alias moves only when the new ranker beats the champion on the same validation users (test is
    never used to choose). The evaluation report is added to the run once written (``log_report``)."""
    dataset = report["dataset"]
    configure_mlflow(settings.mlflow_dir, f"recsys-{dataset}")
    ranker, _, section = load_ranker(Path(ranker_dir))
    training = json.loads((Path(training_dir) / DONE).read_text())
    name = registered_model_name(settings, dataset)
    with mlflow.start_run(run_name="reranker") as run:
        mlflow.set_tags({"stage": "reranker", "dataset": dataset, "data_fingerprint": fingerprint[:16],
                         "best_peer": report["two_stage_vs_best_peer"]["peer"]})  # fmt: skip
        if dataset_dir is not None:
            log_dataset(dataset_dir, fingerprint, context="training")  # trained on it, evaluated on its test cut
        mlflow.log_metrics(headline_metrics(report))
        mlflow.log_params({k: str(v)[:500] for k, v in settings_key(settings).items()})
        mlflow.log_params({"best_iteration": section["best_iteration"], "chosen_k_candidates": report["k_candidates"]})
        mlflow.log_metrics({f"training_{k}": v for k, v in training.items()})
        mlflow.log_metric("validation_ndcg_at_10", section["validation_ndcg"])
        for method, values in report["methods"].items():
            mlflow.log_metrics({f"{method}_{k.replace('@', '_at_')}": v for k, v in values.items()})
        for source, by_k in report["stage1_recall_all_k"].items():
            mlflow.log_metrics({f"stage1_recall_{source}_at_{k}": v for k, v in by_k.items()})
        mlflow.log_metrics({f"two_stage_latency_{k}_ms": v for k, v in report["two_stage_latency_ms"].items()})
        gain = report["two_stage_vs_best_peer"]
        mlflow.log_metrics({"two_stage_vs_peer_ndcg_ratio": gain["ndcg@10_ratio"],
                            "two_stage_vs_peer_ci95_low": gain["ci95"][0], "two_stage_vs_peer_ci95_high": gain["ci95"][1]})  # fmt: skip
        mlflow.log_table(evaluation_table(report), "evaluation_table.json")
        top = sorted(section["importance"].items(), key=lambda kv: -kv[1])[:25]
        log_figure(figure_bar(dict(top), "Feature importance (gain)"), "feature_importance.png")
        sweep = report["k_sweep"]["rows"]
        log_figure(figure_lines({"validation NDCG@10": {r["k_candidates"]: r["ndcg@10"] for r in sweep}},
                                "Candidate-set size: NDCG@10 by K", "K candidates", "NDCG@10"), "ndcg_by_k.png")  # fmt: skip
        log_figure(recall_curve_figure({s: {int(k): v for k, v in by_k.items()}
                                        for s, by_k in report["stage1_recall_all_k"].items()}), "stage1_recall_at_k.png")  # fmt: skip
        info = mlflow.lightgbm.log_model(
            ranker.booster,
            name="reranker",
            registered_model_name=name,
            pip_requirements=[f"lightgbm=={lightgbm.__version__}"],
        )  # no slow inference
        version = info.registered_model_version
        new_ndcg = comparison["validation_ndcg@10"]
        old_ndcg = comparison.get("champion_holdout_ndcg@10")
        decision = comparison["decision"]
        MlflowClient().set_model_version_tag(name, str(version), "validation_ndcg_at_10", f"{new_ndcg:.5f}")
        mlflow.set_tags({"release": "publish" if decision["publish"] else "challenger",
                         "release_reason": decision["reason"][:5000],
                         "holdout_ndcg_at_10": str(comparison["holdout_ndcg@10"]),
                         "champion_holdout_ndcg_at_10": str(old_ndcg)})  # fmt: skip
        return {"run_id": run.info.run_id, "model": name, "version": str(version), "promoted": decision["publish"],
                "champion_holdout_ndcg@10": old_ndcg, "validation_ndcg@10": new_ndcg}  # fmt: skip


def evaluation_table(report: dict[str, Any]) -> dict[str, list[Any]]:
    methods = report["methods"]
    return {
        "method": list(methods),
        **{
            metric: [round(methods[m][metric], 4) for m in methods]
            for metric in ("ndcg@10", "recall@10", "map@10", "conversion_ndcg@10")
            if all(metric in methods[m] for m in methods)
        },
    }


def write_report(report: dict[str, Any], settings: Settings, run_name: str) -> Path:
    """``evaluation.json`` in this run's report folder under the state folder."""
    folder = settings.reports_dir / slug(report["dataset"]) / run_name
    public = {k: report[k] for k in ("dataset", "k_candidates", "served", "methods", "stage1_recall")}
    extra = {**{k: v for k, v in report.items() if k not in public}, "measured_with": code_version()}
    path = folder / REPORT_FILE
    write_json({**public, "details": extra}, path)
    return path


@task
def log_report(run_id: str, path: str, settings: Settings) -> None:
    """The written report file itself as the run's ``evaluation.json`` (its folder is named by the run, so it is
    written once the run exists; artifacts can be added to a finished run)."""
    MlflowClient(tracking_uri(settings.mlflow_dir)).log_artifact(run_id, path)


@flow(name="reranker", log_prints=True)
def reranker_flow(
    dataset_dir: str, fingerprint: str, vectors_path: str, tuning: dict[str, Any], settings: Settings,
    force: bool = False, profile: str = "full",
) -> dict[str, Any]:  # fmt: skip
    """Build the training set on the validation cut, cross-validate K and train, evaluate once on test against the
    tuned peers, compare with the champion on validation, log and register."""
    config = settings_key(settings)
    training_dir = run_step(build_training_set, dataset_dir, fingerprint, vectors_path, tuning["params"], config,
                            settings)  # fmt: skip
    ranker_dir = run_step(train_reranker, training_dir, config, settings)
    report = run_step(evaluate_reranker, dataset_dir, vectors_path, ranker_dir, training_dir, config, settings)
    report["tuning"] = {k: tuning[k] for k in ("params", "validation_ndcg@10", "trials", "seconds")}
    report["stage1_recall"] = {name: {k: by_k[k] for k in ("100", "500")}
                               for name, by_k in report["stage1_recall_all_k"].items()}  # fmt: skip
    comparison = compare_with_champion(training_dir, ranker_dir, settings, force, profile)
    report["champion"] = comparison
    registration = log_and_register(report, comparison, training_dir, ranker_dir, fingerprint, settings, dataset_dir)
    table = evaluation_table(report)
    rows = [dict(zip(table, values, strict=True)) for values in zip(*table.values(), strict=True)]
    create_table_artifact(rows, key=f"evaluation-{slug(report['dataset'])}",
                          description=f"NDCG@10 / Recall@10 / MAP@10 on {report['dataset']}, chosen K {report['k_candidates']}")  # fmt: skip
    path = write_report(report, settings, registration["run_id"])
    log_report(registration["run_id"], str(path), settings)
    print(f"evaluation report: {path}")
    return {"report": report, "report_path": str(path), "ranker_dir": ranker_dir, "training_dir": training_dir,
            "registration": registration, "release": comparison["decision"]}  # fmt: skip
