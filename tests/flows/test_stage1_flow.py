"""The stage-1 flow end to end on a small demo catalog: it publishes a loadable version, logs to MLflow,
creates the recall table artifact, and a re-run is served from the task cache."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from flows.stage1 import stage1_flow
from flows.tracking import tracking_uri
from models.recommender.versions import VersionStore, verify_version
from models.retrieval.sources import UserQuery
from models.retrieval.stage1 import load_stage1


@pytest.fixture(scope="module")
def first_run(small_state):
    settings, dataset_dir = small_state
    return settings, stage1_flow(str(dataset_dir), settings)


def test_flow_reports_recall_for_every_source(first_run):
    _, result = first_run
    assert set(result["recall"]) == {"collaborative", "graph", "popular", "semantic", "fresh", "merged"}
    for by_k in result["recall"].values():
        assert list(by_k) == ["50", "100", "200", "500", "1000"]
        values = list(by_k.values())
        assert values == sorted(values) and 0.0 <= values[0] <= values[-1] <= 1.0
    assert result["recall"]["collaborative"]["200"] > 0.05


def test_published_version_loads_and_retrieves(first_run):
    settings, result = first_run
    current = VersionStore(settings.versions_dir).current()
    assert str(current) == result["version"]
    manifest = verify_version(current)
    section = manifest["stage1"]
    assert section["embedding"]["dim"] == 384
    assert section["indexes"]["semantic"]["metric"] == "inner_product"
    assert manifest["dataset"]["name"] == "demo" and len(manifest["dataset"]["fingerprint"]) == 64
    stage1 = load_stage1(current / "stage1", section, encoder_dim=384)
    user = str(stage1.collaborative.user_ids[0])
    candidates = stage1.candidates(UserQuery(user, as_of=section["as_of"]), k=100)
    assert len(candidates) == 100 and len(set(candidates.item_ids)) == 100
    assert set(candidates.primary_source) <= {"collaborative", "graph", "popular", "semantic", "fresh"}


def test_mlflow_run_has_metrics_params_and_plot(first_run):
    settings, result = first_run
    mlflow.set_tracking_uri(tracking_uri(settings.mlflow_dir))
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.metrics["recall_merged_at_500"] == pytest.approx(result["recall"]["merged"]["500"])
    assert "semantic_ann_recall_vs_exact" in run.data.metrics
    assert "stage1.als_factors" in run.data.params
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"stage1_recall_at_k.png", "stage1_section.json"} <= artifacts


def test_rerun_hits_the_cache_and_publishes_the_same_artifacts(first_run, small_state):
    settings, result = first_run
    from prefect import get_client

    again = stage1_flow(str(small_state[1]), settings, return_state=True)
    assert again.is_completed()
    rerun = again.result()
    assert rerun["stage1_dir"] == result["stage1_dir"] and rerun["version"] != result["version"]
    old = json.loads((Path(result["version"]) / "manifest.json").read_text())["files"]
    new = json.loads((Path(rerun["version"]) / "manifest.json").read_text())["files"]
    assert old == new

    import asyncio

    async def task_states() -> dict[str, str]:
        async with get_client() as client:
            runs = await client.read_task_runs()
            return {r.name: r.state.name for r in runs if r.flow_run_id == again.state_details.flow_run_id}

    states = asyncio.run(task_states())
    cached = {name.rsplit("-", 1)[0]: state for name, state in states.items()}
    assert cached["embed_items"] == "Cached" and cached["build_stage1"] == "Cached"


def test_recall_table_artifact_exists(first_run):
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["stage1-recall-demo"]))
            )

    artifacts = asyncio.run(read())
    assert artifacts and artifacts[0].type == "table"
    assert "merged" in json.dumps(artifacts[0].data)
