"""MLflow as a reader expects it: experiments open in model-training mode, every run names the dataset it used (name,
digest = data fingerprint, source folder), the re-ranker run carries the headline numbers as sortable metrics and
the report and plots as artifacts, and ``recsys runs`` compares runs from the terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from flows.cli import main
from flows.tracking import (
    DIGEST_CHARS,
    EXPERIMENT_KIND_TAG,
    MLFLOW_UI,
    MODEL_DEVELOPMENT,
    SavedDataset,
    configure_mlflow,
    tracking_uri,
)
from models.recommender.versions import read_manifest
from models.settings import Settings

CONTEXTS = {"tuning": "tuning", "features": "features", "reranker": "training"}


def test_experiments_open_in_model_training_mode_new_or_existing(tmp_path: Path):
    mlflow_dir = tmp_path / "mlflow"
    configure_mlflow(mlflow_dir, "recsys-new")
    client = MlflowClient(tracking_uri(mlflow_dir))
    old = client.create_experiment("recsys-old")  # as an earlier version of the flows created it: no kind
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert configure_mlflow(mlflow_dir, "recsys-old") == old
    for name in ("recsys-new", "recsys-old"):
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None and experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_DEVELOPMENT == (
            "custom_model_development"
        )


def test_the_dataset_input_is_described_from_the_footer_as_mlflow_would_from_the_frame(small_state):
    """Schema and row count from the Parquet footer equal what ``mlflow.data.from_pandas`` infers from all rows."""
    _, folder = small_state
    interactions = pd.read_parquet(folder / "interactions.parquet")
    reference = mlflow.data.from_pandas(interactions, name="demo", digest="x")
    dataset = SavedDataset(folder, "0123456789abcdef" * 4)
    assert dataset.schema == reference.schema
    assert dataset.schema.to_dict() == reference.schema.to_dict()  # including which columns may be null
    assert dataset.profile["num_rows"] == len(interactions) and dataset.profile["num_elements"] == interactions.size
    assert dataset.profile["items"] == len(pd.read_parquet(folder / "items.parquet"))
    assert (dataset.name, dataset.digest) == ("demo", "0123456789abcdef")
    assert json.loads(dataset.source.to_json()) == {"uri": str(folder.resolve())}


def pipeline_runs(settings: Settings) -> tuple[MlflowClient, dict[str, Run]]:
    """The published state's one run of each kind (it ran the pipeline once; other tests copy it)."""
    client = MlflowClient(tracking_uri(settings.mlflow_dir))
    experiment = client.get_experiment_by_name("recsys-demo")
    assert experiment is not None
    runs: dict[str, Run] = {}
    for stage in CONTEXTS:
        (run,) = client.search_runs([experiment.experiment_id], f"tags.stage = '{stage}'")
        runs[stage] = run
    return client, runs


def test_every_run_logs_the_dataset_it_used(published):
    settings, summary = published
    client, runs = pipeline_runs(settings)
    experiment = client.get_experiment_by_name("recsys-demo")
    assert experiment is not None and experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_DEVELOPMENT
    fingerprint = read_manifest(Path(summary["version"]))["dataset"]["fingerprint"]
    assert len(fingerprint) == 64
    folder = settings.dataset_dir("demo").resolve()
    rows = pd.read_parquet(folder / "interactions.parquet")
    for stage, run in runs.items():
        (entry,) = run.inputs.dataset_inputs
        dataset = entry.dataset
        assert (dataset.name, dataset.digest) == ("demo", fingerprint[:DIGEST_CHARS]), stage
        assert dataset.digest == run.data.tags["data_fingerprint"]  # the same id as the run's tag
        assert json.loads(dataset.source) == {"uri": str(folder)} and dataset.source_type == "local"
        assert {tag.key: tag.value for tag in entry.tags} == {"mlflow.data.context": CONTEXTS[stage]}
        columns = json.loads(dataset.schema)["mlflow_colspec"]
        assert [c["name"] for c in columns] == list(rows.columns)
        assert json.loads(dataset.profile)["num_rows"] == len(rows)


def test_the_reranker_run_has_the_headline_metrics_of_its_report(published):
    settings, summary = published
    client, runs = pipeline_runs(settings)
    run = runs["reranker"]
    assert run.info.run_id == summary["registration"]["run_id"]
    report = json.loads(Path(summary["report_path"]).read_text())
    peer = report["details"]["two_stage_vs_best_peer"]["peer"]
    assert run.data.tags["best_peer"] == peer and peer in {"ease", "rp3beta", "ials", "item_knn"}
    expected = {
        "ndcg_at_10_two_stage": report["methods"]["two_stage"]["ndcg@10"],
        "ndcg_at_10_best_peer": report["methods"][peer]["ndcg@10"],
        "recall_at_500_merged": report["stage1_recall"]["merged"]["500"],
        "k_candidates": report["k_candidates"],
    }
    assert {name: run.data.metrics[name] for name in expected} == expected
    assert expected["ndcg_at_10_two_stage"] != expected["ndcg_at_10_best_peer"]  # two different numbers
    assert run.data.metrics["two_stage_vs_peer_ndcg_ratio"] == pytest.approx(
        expected["ndcg_at_10_two_stage"] / expected["ndcg_at_10_best_peer"]
    )


def test_the_reranker_run_has_the_report_and_plots_as_artifacts(published, tmp_path: Path):
    settings, summary = published
    client, runs = pipeline_runs(settings)
    run_id = runs["reranker"].info.run_id
    sizes = {a.path: a.file_size for a in client.list_artifacts(run_id)}
    for plot in ("stage1_recall_at_k.png", "ndcg_by_k.png"):
        assert (sizes.get(plot) or 0) > 1000, plot
        assert Path(client.download_artifacts(run_id, plot, str(tmp_path))).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = Path(client.download_artifacts(run_id, "evaluation.json", str(tmp_path)))
    assert logged.read_bytes() == Path(summary["report_path"]).read_bytes()  # the written report, not a variant


def runs_output(state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                *args: str) -> tuple[int, list[str]]:  # fmt: skip
    monkeypatch.setenv("RECSYS_STATE_DIR", str(state))
    code = main(["runs", *args])
    captured = capsys.readouterr()
    return code, (captured.out or captured.err).splitlines()


def test_runs_command_prints_the_pipelines_reranker_run(published, monkeypatch, capsys):
    settings, summary = published
    code, lines = runs_output(settings.state_dir, monkeypatch, capsys, "--dataset", "demo")
    assert code == 0
    assert lines[0].startswith("experiment 'recsys-demo'") and "1 re-ranker run(s)" in lines[0]
    header, row = lines[1].split(), lines[2].split()
    assert header[:2] == ["run_id", "start"]
    report = json.loads(Path(summary["report_path"]).read_text())
    gain = report["details"]["two_stage_vs_best_peer"]
    assert row[0] == summary["registration"]["run_id"]
    assert row[3:] == [
        f"{report['methods']['two_stage']['ndcg@10']:.4f}", gain["peer"],
        f"{report['methods'][gain['peer']]['ndcg@10']:.4f}", f"{gain['ndcg@10_ratio']:.2f}x",
        f"{report['stage1_recall']['merged']['500']:.4f}", str(report["k_candidates"]), "publish",
        read_manifest(Path(summary["version"]))["dataset"]["fingerprint"][:DIGEST_CHARS],
    ]  # fmt: skip


def test_runs_command_lists_newest_first_and_honours_the_state_dir(tmp_path: Path, monkeypatch, capsys):
    state = tmp_path / "state"
    settings = Settings(state_dir=state)
    experiment = configure_mlflow(settings.mlflow_dir, "recsys-shop")
    client = MlflowClient(tracking_uri(settings.mlflow_dir))

    def run(stage: str, start: int, metrics: dict[str, Any], release: str) -> str:
        created = client.create_run(experiment, start_time=start, tags={"stage": stage, "release": release})
        for name, value in metrics.items():
            client.log_metric(created.info.run_id, name, value)
        client.set_terminated(created.info.run_id)
        return created.info.run_id

    headline = {"ndcg_at_10_two_stage": 0.2, "ndcg_at_10_best_peer": 0.1, "two_stage_vs_peer_ndcg_ratio": 2.0,
                "recall_at_500_merged": 0.5, "k_candidates": 200}  # fmt: skip
    oldest = run("reranker", 1_000_000, {"two_stage_ndcg_at_10": 0.1}, "publish")  # logged before the headline
    run("tuning", 2_000_000, headline, "")  # not a re-ranker run
    newer = run("reranker", 3_000_000, headline, "challenger")
    newest = run("reranker", 4_000_000, {**headline, "ndcg_at_10_two_stage": 0.25}, "publish")

    code, lines = runs_output(state, monkeypatch, capsys, "--dataset", "shop")
    assert code == 0 and "3 re-ranker run(s)" in lines[0]
    assert [line.split()[0] for line in lines[2:-1]] == [newest, newer, oldest]
    assert lines[2].split()[3:] == ["0.2500", "-", "0.1000", "2.00x", "0.5000", "200", "publish", "-"]
    assert lines[4].split()[3:] == ["-"] * 6 + ["publish", "-"]
    # MLflow 3.17's UI opens GenAI mode unless the address asks for model training
    assert (
        lines[-1]
        == f"in the MLflow UI (make ui): {MLFLOW_UI}/#/experiments/{experiment}/runs?workflowType=machine_learning"
    )

    code, lines = runs_output(state, monkeypatch, capsys, "--dataset", "shop", "--limit", "1")
    assert code == 0 and [line.split()[0] for line in lines[2:-1]] == [newest]
    code, lines = runs_output(state, monkeypatch, capsys, "--dataset", "demo")
    assert code == 2 and lines[-1:] == [f"no experiment 'recsys-demo' in {settings.mlflow_dir / 'mlflow.db'}"]
    code, lines = runs_output(tmp_path / "elsewhere", monkeypatch, capsys, "--dataset", "shop")
    assert code == 2 and lines[0].startswith("no MLflow store at")
