"""The stage-1 flow on a small demo catalog: it embeds the items, tunes every peer on the validation cut, logs the
search to MLflow (a run with one child run per trial) and a table artifact, and a re-run comes from the cache; the
serving stage 1 built from its configuration loads and retrieves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from flows.stage1 import SECTION_FILE, build_serving_stage1, stage1_flow
from flows.tracking import tracking_uri
from models.evaluation.peers import PEERS
from models.retrieval.sources import UserQuery
from models.retrieval.stage1 import STAGE1_SOURCES, Stage1Config, load_stage1


@pytest.fixture(scope="module")
def first_run(small_state):
    settings, dataset_dir = small_state
    return settings, stage1_flow(str(dataset_dir), settings)


def test_every_peer_is_tuned_on_the_validation_cut(first_run):
    settings, result = first_run
    tuning = result["tuning"]
    assert set(tuning["params"]) == set(PEERS)
    for peer in PEERS:
        assert 0.0 < tuning["validation_ndcg@10"][peer] <= 1.0
        assert 1 <= tuning["trials"][peer] <= settings.tuning_trials
    assert len(tuning["history"]) == sum(tuning["trials"].values())
    best = max((t for t in tuning["history"] if t["peer"] == "ease"), key=lambda t: t["ndcg@10"])
    assert tuning["params"]["ease"]["l2"] == best["params"]["l2"]  # the chosen value is the best trial's
    assert np.load(result["vectors"]).shape[1] == 384


def test_mlflow_has_the_search_and_its_trials(first_run):
    settings, result = first_run
    mlflow.set_tracking_uri(tracking_uri(settings.mlflow_dir))
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.metrics["ease_validation_ndcg_at_10"] == pytest.approx(
        result["tuning"]["validation_ndcg@10"]["ease"]
    )
    children = mlflow.search_runs(
        experiment_ids=[run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(children) == len(result["tuning"]["history"])
    assert set(children["tags.peer"]) == set(PEERS)


def test_serving_stage1_loads_and_retrieves_from_every_source(first_run, small_state):
    settings, result = first_run
    dataset_dir = small_state[1]
    config = Stage1Config.from_settings(settings, peer_params=result["tuning"]["params"]).to_json()
    folder = Path(build_serving_stage1.fn(str(dataset_dir), "f" * 64, result["vectors"], config, settings))
    section = json.loads((folder / SECTION_FILE).read_text())
    stage1 = load_stage1(folder, section, encoder_dim=384)
    assert tuple(s.name for s in stage1.sources) == STAGE1_SOURCES
    assert stage1.config.peer_params["ease"]["l2"] == result["tuning"]["params"]["ease"]["l2"]
    assert stage1.row_of is stage1.source("semantic").row_of  # one id → row dict per catalogue and worker
    for first, second in (("ease", "ease_recent"), ("cooc_last", "cooc_recent")):  # one table, written once
        assert stage1.source(second).table is stage1.source(first).table  # type: ignore[attr-defined]
        assert not (folder / f"{second}.data.npy").exists()
    user = str(stage1.ials.user_ids[0])
    seen = stage1.item_ids[:3].tolist()
    results = stage1.retrieve_all(UserQuery(user, as_of=section["as_of"], seen=seen, history_items=seen), 100)
    assert all(len(r) > 0 for r in results if r.source != "fresh")
    candidates = stage1.candidates(UserQuery(user, as_of=section["as_of"], seen=seen, history_items=seen), k=100)
    assert len(candidates) == 100 and len(set(candidates.item_ids)) == 100


def test_rerun_hits_the_cache(first_run, small_state):
    settings, result = first_run
    from prefect import get_client

    again = stage1_flow(str(small_state[1]), settings, return_state=True)
    assert again.is_completed()
    assert again.result()["tuning"]["params"] == result["tuning"]["params"]

    async def task_states() -> dict[str, str]:
        async with get_client() as client:
            runs = await client.read_task_runs()
            return {r.name: r.state.name for r in runs if r.flow_run_id == again.state_details.flow_run_id}

    cached = {name.rsplit("-", 1)[0]: state for name, state in asyncio.run(task_states()).items()}
    assert cached["embed_items"] == "Cached" and cached["tune_peers"] == "Cached"


def test_tuning_table_artifact_exists(first_run):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tuning-demo"]))
            )

    artifacts = asyncio.run(read())
    assert artifacts and artifacts[0].type == "table"
    assert "ease" in json.dumps(artifacts[0].data)
