"""The parent flow: data → validation → stage 1 → features → re-ranker → evaluation → publish.

Each child step caches on its inputs, so a re-run after a failure resumes where it stopped. Publishing switches the
served version only when the new one beats the champion on the validation cut (or is forced) and after it loaded
and ranked known users through the online store; otherwise it is stored as the namespace's challenger. A re-run that
reused every step publishes nothing (unless forced): the champion or challenger was built from the same folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, task

from flows.common import IO_RETRIES, code_version, link_tree
from flows.features import SNAPSHOT_FILE, features_flow, materialize_snapshot
from flows.memory import StageLog
from flows.profiles import built_profile
from flows.registry import sync_champion_alias
from flows.reranker import reranker_flow
from flows.runtime import run_step, task_runner
from flows.stage1 import SECTION_FILE, build_serving_stage1, fingerprint_dataset, stage1_flow
from models.data import columns as C
from models.data.datasets import load_dataset
from models.data.tables import save_dataset
from models.features.spec import EVENT_TIMESTAMP, FEATURE_SERVICE, USER_SEEN_ITEMS
from models.features.store import open_store
from models.files import ArtifactError
from models.live.ingest import ingest_log, read_live_log, read_live_marker, write_live_marker
from models.ranking.rules import RulesConfig
from models.recommender.bundle import CATALOG_COLUMNS, CATALOG_TABLE, ITEM_TABLE, known_user_gate, smoke_test
from models.recommender.versions import CHALLENGER, CURRENT, VersionStore, read_manifest
from models.settings import Settings
from models.training.steps import RANKER_SECTION, SPEC_FILE, STAGE1_FILE


@task(**IO_RETRIES)
def prepare_dataset(kind: str, data_dir: str | None, settings: Settings) -> str:
    """Load (or generate) and validate the dataset; nothing is written when validation fails."""
    dataset = load_dataset(kind, settings, Path(data_dir) if data_dir else None)
    records = read_live_log(settings, dataset.name)
    dataset = ingest_log(dataset, records)  # what the service accepted since: validated with the rest
    folder = save_dataset(dataset, settings.dataset_dir(dataset.name))
    write_live_marker(folder, records)
    return str(folder)


def build_inputs(fingerprint: str, stage1_dir: str, snapshot_dir: str, ranker_dir: str, settings: Settings,
                 profile: str = "full") -> dict[str, str]:  # fmt: skip
    """What a version is built from. The work folders are named by their inputs (data, settings, library code), so
    equal names mean equal artifacts; the online store is named too, as publishing is what fills it, and the
    profile, as a first look is replaced by the next run of another profile (never 'unchanged' against it)."""
    return {"dataset": fingerprint, "stage1": Path(stage1_dir).name, "features": Path(snapshot_dir).name,
            "ranker": Path(ranker_dir).name, "online_store": settings.online_store, "profile": profile}  # fmt: skip


def version_built_from(build: dict[str, str], settings: Settings) -> tuple[str, Path] | None:
    """The namespace's champion, else its challenger, when it was built from exactly ``build`` (a re-run that reused
    every step), as (role, folder); else None: publishing again would only add a copy of it as a challenger."""
    store = VersionStore(settings.versions_dir)
    for role in (CURRENT, CHALLENGER):
        folder = store.pointed(role)
        if folder is None:
            continue
        try:
            recorded = read_manifest(folder).get("build")
        except ArtifactError:
            continue  # an unreadable version is not this build
        if recorded is not None and {**recorded, "profile": built_profile(recorded)} == build:
            return ("champion" if role == CURRENT else "challenger"), folder
    return None


@task
def publish_version(dataset_dir: str, stage1_dir: str, snapshot_dir: str, ranker_dir: str, report: dict[str, Any],
                    release: dict[str, Any], registration: dict[str, Any], fingerprint: str, build: dict[str, str],
                    settings: Settings, profile: str = "full") -> str:  # fmt: skip
    """Assemble the version folder (stage 1, item table and catalogue, ranker), check it (it loads, and known users
    rank the same through the online store as from the offline snapshot), then make it the champion — or the
    challenger, as the release decision says. What is served is untouched until then."""
    dataset = Path(dataset_dir).name
    store = VersionStore(settings.versions_dir)
    store.clean_staging()
    builder = store.start()
    try:
        link_tree(Path(stage1_dir), builder.path / "stage1")
        (builder.path / "stage1" / SECTION_FILE).unlink()
        builder.add_section("stage1", json.loads((Path(stage1_dir) / SECTION_FILE).read_text()))
        (builder.path / "features").mkdir()
        items = pd.read_parquet(Path(snapshot_dir) / "item_features.parquet")
        items.drop(columns=[EVENT_TIMESTAMP]).to_parquet(builder.path / ITEM_TABLE, index=False)
        columns = [*CATALOG_COLUMNS, C.TITLE]  # the title: for people (the explorer, examples), not for the rules
        catalog = pd.read_parquet(Path(dataset_dir) / "items.parquet", columns=columns)  # validated
        catalog.to_parquet(builder.path / CATALOG_TABLE, index=False)
        spec = json.loads((Path(ranker_dir) / SPEC_FILE).read_text())
        snapshot = json.loads((Path(snapshot_dir) / SNAPSHOT_FILE).read_text())
        builder.add_section("features", {"item_table": ITEM_TABLE, "catalog": CATALOG_TABLE, "spec": spec,
                                         "feature_service": FEATURE_SERVICE, "snapshot_time": snapshot["snapshot_time"],
                                         "store": {"dataset": dataset, "namespace": settings.namespace,
                                                   "online_store": settings.online_store}})  # fmt: skip
        (builder.path / "ranker").mkdir()
        (builder.path / "ranker" / "ranker.txt").hardlink_to(Path(ranker_dir) / "ranker.txt")
        section = json.loads((Path(ranker_dir) / RANKER_SECTION).read_text())
        builder.add_section("ranker", {k: v for k, v in section.items() if k != "importance"})
        builder.add_section("k_candidates", int(report["k_candidates"]))
        builder.add_section("evaluation", {"methods": report["methods"], "stage1_recall": report["stage1_recall"]})
        builder.add_section("live", read_live_marker(Path(dataset_dir)))
        builder.add_section("release", release)
        builder.add_section("registry", {"model": registration["model"], "version": registration["version"]})
        builder.add_section("build", build)
        extra = {"dataset": {"name": dataset, "fingerprint": fingerprint}}
        users = pd.read_parquet(Path(snapshot_dir) / "user_features.parquet")
        builder.add_section("explorer", {"example_users": example_users(users)})

        def gate(path: Path) -> None:
            rules = RulesConfig.from_settings(settings)
            smoke_test(path, rules)
            materialize_snapshot(snapshot_dir, dataset, settings)
            checked = known_user_gate(path, rules, open_store(settings, dataset), users, settings.release_gate_users,
                                      settings.seed)  # fmt: skip
            print(f"publish gate: {checked['users']} known users ranked the same online as offline")

        published = store.publish(builder, extra, check=gate, as_champion=bool(release["publish"]),
                                  reason=str(release["reason"]))  # fmt: skip
        role = "champion (served)" if release["publish"] else "challenger (not served: shadow or split only)"
        print(f"version {published.name} is the {role}: {release['reason']}")
        return str(published)
    except BaseException:
        store.discard(builder)
        raise


def example_users(users: pd.DataFrame, count: int = 6) -> list[str]:
    """Known users to try in the explorer, from the most to the least active (evenly spread over the activity
    ranking), so the examples show a long history and a short one."""
    seen = users[USER_SEEN_ITEMS].map(len)
    active = users.assign(seen=seen)[seen > 0].sort_values(["seen", C.USER_ID], ascending=[False, True])
    if active.empty:
        return []
    picks = np.unique(np.linspace(0, len(active) - 1, num=min(count, len(active))).round().astype(int))
    return [str(u) for u in active[C.USER_ID].to_numpy()[picks]]


@task
def build_bento(version: str, settings: Settings) -> str:
    """Pack the just-published version as the model ``recsys-state`` and build the bento that serves it."""
    import bentoml  # BENTOML_HOME is set by the entry point (flows/runtime.py) before this import

    from flows.package import export_state_model

    export_state_model(settings)
    root = Path(__file__).resolve().parents[1]
    bento = bentoml.bentos.build_bentofile(str(root / "serving" / "bentofile.yaml"), build_ctx=str(root))
    return str(bento.tag)


@task
def move_registry_alias(settings: Settings) -> str:
    """The registry follows what is served: ``champion`` names the model of ``current``, ``challenger`` that of
    the challenger (a promote or rollback done by a service since the last run is caught up here too)."""
    synced = sync_champion_alias(settings, VersionStore(settings.versions_dir))
    print(f"registry: {synced}")
    return synced


@flow(name="pipeline", log_prints=True)
def pipeline_flow(kind: str, data_dir: str | None, settings: Settings, force: bool = False,
                  profile: str = "full") -> dict[str, Any]:  # fmt: skip
    """The whole offline pipeline for one dataset; returns a summary with per-stage times. ``force``: publish even
    when the new version does not beat the champion. ``profile``: the name of the settings' profile (they are
    already applied), recorded in the version."""
    code_version()  # the code this run measures, as it is now
    log = StageLog()
    with log.stage("data"):
        dataset_dir = run_step(prepare_dataset, kind, data_dir, settings)
        fingerprint = fingerprint_dataset(dataset_dir)
    settings = settings.for_dataset(Path(dataset_dir).name)  # the namespace this run publishes to
    with log.stage("stage1"):
        stage1 = stage1_flow.with_options(task_runner=task_runner(settings))(dataset_dir, settings)
    settings = settings.model_copy(update={"embedding_backend": stage1["encoder"]["backend"]})  # what was chosen
    with log.stage("features"):
        features = features_flow.with_options(task_runner=task_runner(settings))(dataset_dir, fingerprint, settings)
    with log.stage("reranker"):
        reranker = reranker_flow(dataset_dir, fingerprint, stage1["vectors"], stage1["tuning"], settings, force,
                                 profile)  # fmt: skip
    with log.stage("serving_stage1"):
        config = json.loads((Path(reranker["ranker_dir"]) / STAGE1_FILE).read_text())
        # the served indexes reach the recall target at the K the re-ranker was chosen for, not at the largest K
        # the sweep compared (a smaller K can need fewer IVF lists probed for the same recall)
        config["serving_k"] = int(reranker["report"]["k_candidates"])
        stage1_dir = run_step(build_serving_stage1, dataset_dir, fingerprint, stage1["vectors"], config, settings)
    with log.stage("publish"):
        release = reranker["release"]
        build = build_inputs(fingerprint, stage1_dir, features["snapshot_dir"], reranker["ranker_dir"], settings,
                             profile)  # fmt: skip
        if not force and (existing := version_built_from(build, settings)) is not None:
            role, folder = existing
            release = {**release, "publish": role == "champion", "unchanged": True,
                       "reason": f"unchanged: the {role} {folder.name} was built from the same data, stage 1, "
                                 "features and ranker; nothing published"}  # fmt: skip
            version = str(folder)
            print(f"version {folder.name} stays the {role}: {release['reason']}")
        else:
            registration = {**reranker["registration"], "dataset": Path(dataset_dir).name}
            version = run_step(publish_version, dataset_dir, stage1_dir, features["snapshot_dir"],
                               reranker["ranker_dir"], reranker["report"], release, registration, fingerprint, build,
                               settings, profile)  # fmt: skip
        move_registry_alias(settings)
    bento = None
    if settings.build_bento and release["publish"] and not release.get("unchanged"):
        with log.stage("bento"):
            bento = build_bento(version, settings)
    return {
        "bento": bento,
        "dataset": Path(dataset_dir).name,
        "version": version,
        "timings_s": log.seconds,
        "peak_memory_mb": log.peak_mb,
        "stage1_recall": reranker["report"]["stage1_recall_all_k"],
        "served": reranker["report"]["served"],
        "methods": reranker["report"]["methods"],
        "two_stage_vs_best_peer": reranker["report"]["two_stage_vs_best_peer"],
        "tuning_trials": reranker["report"]["tuning"]["trials"],
        "profile": profile,
        "k_candidates": reranker["report"]["k_candidates"],
        "text_encoder": stage1["encoder"],
        "report_path": reranker["report_path"],
        "registration": reranker["registration"],
        "namespace": settings.namespace,
        "release": release,
    }
