"""Scale-out parity: the embedding and feature steps on a Dask cluster give the local run's result, at a size.

The demo catalogue scaled to ``--items`` (users and interactions alike) is generated and validated once; then the
pipeline's own steps run twice, each into its own state folder: on the local thread pool, and through
prefect-dask's task runner on a Dask scheduler (a ``LocalCluster`` started here, or ``--address`` of a running
one whose workers share this machine's files). Features: ``flows.features.features_flow`` in full (user and item
snapshots as two tasks, Feast apply, offline store, MLflow), every snapshot column compared exactly. Embedding:
``flows.stage1.embed`` (one task locally, shards of ``--shard-size`` items on the cluster) over the first
``--embed-items`` items (default all) with ``--backend``: ``static`` (the default, the encoder the bench's 1 M build
uses) or ``torch``, whose vectors do not depend on the batch a text lands in (the int8 encoder quantises activations
per batch); the largest absolute difference between the two runs is reported. With ``torch``, embedding a million
texts twice takes hours on two cores: give it a sample.

``python -m bench.dask_parity --items 1000000 --dataset-dir STATE/data/demo --out DIR`` prints a table and writes
``DIR/dask_parity.json`` (``--dataset-dir``: an already saved catalogue of that size, e.g. the 1 M bench state's,
instead of generating it again).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from bench.common import log
from bench.state import Catalogue, tree_rss_bytes
from models.settings import Settings

SNAPSHOTS = ("user_features.parquet", "item_features.parquet")
VECTOR_TOLERANCE = 1e-6
ParityBackend = Literal["static", "torch"]
"""The batch-invariant encoders: a text's vector does not depend on the shard it is encoded in."""


def saved_dataset(folder: Path, catalogue: Catalogue) -> Path:
    """An already saved catalogue (``--dataset-dir``), checked to be of the size asked for."""
    items = pd.read_parquet(folder / "items.parquet", columns=["item_id"])
    if len(items) != catalogue.items:
        raise ValueError(f"{folder} holds {len(items)} items, not the {catalogue.items} asked for")
    return folder


def generate_dataset(catalogue: Catalogue, root: Path) -> Path:
    """The scaled demo catalogue, validated and saved once under ``root/data``; reused when already there."""
    from models.data.datasets import load_dataset
    from models.data.tables import save_dataset

    settings = Settings(state_dir=root / "data-state", demo_items=catalogue.items, demo_users=catalogue.users,
                        demo_interactions=catalogue.interactions)  # fmt: skip
    folder = settings.dataset_dir("demo")
    marker = folder / "parity-catalogue.json"
    if marker.exists() and json.loads(marker.read_text()) == asdict(catalogue):
        log(f"reusing the dataset in {folder}")
        return folder
    started = time.perf_counter()
    save_dataset(load_dataset("demo", settings, None), folder)
    marker.write_text(json.dumps(asdict(catalogue)))
    log(f"generated and validated {catalogue} in {time.perf_counter() - started:.0f} s")
    return folder


def items_sample(dataset_dir: Path, count: int, root: Path) -> Path:
    """A dataset folder holding only the first ``count`` items (all the embedding step reads)."""
    folder = root / "embed-sample" / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    items = pd.read_parquet(dataset_dir / "items.parquet")
    items.head(count).to_parquet(folder / "items.parquet", index=False)
    return folder


def timed(label: str, run: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Run and return (result, seconds and this process tree's RSS after)."""
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    rss_mb = tree_rss_bytes(os.getpid()) / 2**20
    log(f"{label}: {seconds:.1f} s, process tree RSS {rss_mb:.0f} MB")
    return result, {"seconds": round(seconds, 1), "rss_mb_after": round(rss_mb, 0)}


def run_steps(dataset_dir: Path, sample_dir: Path, settings: Settings, fingerprint: str) -> dict[str, Any]:
    """The feature flow and the embedding step with ``settings``' task runner; paths of what they wrote."""
    from prefect import flow

    from flows.features import features_flow
    from flows.runtime import task_runner
    from flows.stage1 import embed

    @flow(name="embedding-parity")
    def embedding_flow(folder: str, settings: Settings) -> str:
        return embed(folder, fingerprint, settings)

    where = "dask" if settings.dask_address else "local"
    features, feature_time = timed(
        f"{where} features",
        lambda: features_flow.with_options(task_runner=task_runner(settings))(str(dataset_dir), fingerprint, settings),
    )
    vectors, embed_time = timed(
        f"{where} embedding",
        lambda: embedding_flow.with_options(task_runner=task_runner(settings))(str(sample_dir), settings),
    )
    return {"snapshot_dir": features["snapshot_dir"], "vectors": vectors, "counts": features["counts"],
            "features": feature_time, "embedding": embed_time}  # fmt: skip


def compare(local: dict[str, Any], dask: dict[str, Any]) -> dict[str, Any]:
    """Snapshots equal column by column (exactly), vectors within ``VECTOR_TOLERANCE``."""
    snapshots = {}
    for name in SNAPSHOTS:
        left = pd.read_parquet(Path(local["snapshot_dir"]) / name)
        right = pd.read_parquet(Path(dask["snapshot_dir"]) / name)
        try:
            pd.testing.assert_frame_equal(left, right, check_exact=True)
            snapshots[name] = {"rows": len(left), "columns": left.shape[1], "equal": True}
        except AssertionError as difference:
            snapshots[name] = {"rows": len(left), "columns": left.shape[1], "equal": False,
                               "difference": str(difference)[:500]}  # fmt: skip
    a, b = np.load(local["vectors"]), np.load(dask["vectors"])
    largest = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
    return {
        "snapshots": snapshots,
        "vectors": {
            "shape": list(a.shape),
            "max_abs_difference": largest,
            "tolerance": VECTOR_TOLERANCE,
            "equal_within_tolerance": largest <= VECTOR_TOLERANCE,
        },  # fmt: skip
        "same": all(s["equal"] for s in snapshots.values()) and largest <= VECTOR_TOLERANCE,
    }


def run_parity(items: int, embed_items: int | None, shard_size: int, out: Path, address: str | None,
               backend: ParityBackend = "static", dataset_dir: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Both legs computed for real: Prefect's task cache is refreshed, not read (the pipeline's steps are cached
    by their inputs, and the two legs differ only in where they run, which is no input — without the refresh the
    second leg would return the first leg's files)."""
    from prefect.settings import PREFECT_HOME, PREFECT_TASKS_REFRESH_CACHE, temporary_settings

    out.mkdir(parents=True, exist_ok=True)
    with temporary_settings(updates={PREFECT_HOME: out / "prefect", PREFECT_TASKS_REFRESH_CACHE: True}):
        return _run_parity(items, embed_items, shard_size, out, address, backend, dataset_dir)


def _run_parity(items: int, embed_items: int | None, shard_size: int, out: Path, address: str | None,
                backend: ParityBackend, dataset_dir: Path | None) -> dict[str, Any]:  # fmt: skip
    from flows.runtime import prepare_environment
    from models.data.tables import dataset_fingerprint

    catalogue = Catalogue.scaled(items)
    base = Settings(state_dir=out / "local", embedding_backend=backend, embedding_shard_size=shard_size,
                    demo_items=catalogue.items, demo_users=catalogue.users,
                    demo_interactions=catalogue.interactions)  # fmt: skip
    prepare_environment(base)
    dataset_dir = saved_dataset(dataset_dir, catalogue) if dataset_dir else generate_dataset(catalogue, out)
    embed_items = min(embed_items or catalogue.items, catalogue.items)
    sample_dir = items_sample(dataset_dir, embed_items, out) if embed_items < catalogue.items else dataset_dir
    fingerprint = dataset_fingerprint(dataset_dir)
    local = run_steps(dataset_dir, sample_dir, base, fingerprint)
    cluster = None
    if address is None:
        import distributed

        # in-process workers: they share this process's Prefect settings; a remote cluster needs the same
        # PREFECT_API_URL and a shared state folder on every worker
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                           dashboard_address=None)  # fmt: skip
        address = cluster.scheduler_address
    try:
        dask = run_steps(dataset_dir, sample_dir,
                         base.model_copy(update={"state_dir": out / "dask", "dask_address": address}), fingerprint)  # fmt: skip
    finally:
        if cluster is not None:
            cluster.close()
    if Path(dask["snapshot_dir"]).is_relative_to(out / "local") or Path(dask["vectors"]).is_relative_to(out / "local"):
        raise RuntimeError(f"the Dask leg returned the local leg's files ({dask}): it did not run")
    result = {"catalogue": asdict(catalogue), "embedded_items": embed_items, "backend": backend,
              "dataset_dir": str(dataset_dir), "shard_size": shard_size, "scheduler": "LocalCluster (2 in-process workers, 1 thread each)"
              if cluster is not None else address, "local": local, "dask": dask, **compare(local, dask)}  # fmt: skip
    (out / "dask_parity.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def lines(result: dict[str, Any]) -> list[str]:
    c = result["catalogue"]
    rows = [
        f"Catalogue {c['items']:,} items, {c['users']:,} users, {c['interactions']:,} interactions; "
        f"scheduler: {result['scheduler']}",
        "",
        "| step | local (thread pool) | Dask | same result |",
        "|---|---|---|---|",
    ]
    for name, check in result["snapshots"].items():
        rows.append(f"| features: {name} ({check['rows']:,} rows × {check['columns']} columns) | "
                    f"{result['local']['features']['seconds']} s | {result['dask']['features']['seconds']} s | "
                    f"{'equal, every column' if check['equal'] else 'DIFFERENT: ' + check['difference'][:120]} |")  # fmt: skip
    v = result["vectors"]
    rows.append(f"| embedding, first {result['embedded_items']:,} items ({result.get('backend', 'torch')}; Dask: shards of "
                f"{result['shard_size']:,}) | {result['local']['embedding']['seconds']} s | "
                f"{result['dask']['embedding']['seconds']} s | max abs difference {v['max_abs_difference']:.2g} "
                f"({'within' if v['equal_within_tolerance'] else 'OVER'} {v['tolerance']:g}) |")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dask_parity", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="catalogue items (users, interactions scaled)")
    parser.add_argument("--embed-items", type=int, default=None, help="items embedded by both runs (default all)")
    parser.add_argument(
        "--backend",
        default="static",
        choices=("static", "torch"),
        help="text encoder of both runs (both batch-invariant)",
    )
    parser.add_argument(
        "--dataset-dir",
        type=Path,
        default=None,
        help="a saved catalogue of --items items to reuse (default: generate one under --out)",
    )
    parser.add_argument("--shard-size", type=int, default=5_000, help="items per embedding task on the cluster")
    parser.add_argument("--address", default=None, help="a running Dask scheduler (default: a LocalCluster)")
    parser.add_argument("--out", type=Path, default=Settings().state_dir / "bench" / "dask-parity")
    args = parser.parse_args(argv)
    result = run_parity(args.items, args.embed_items, args.shard_size, args.out.resolve(), args.address,
                        args.backend, args.dataset_dir.resolve() if args.dataset_dir else None)  # fmt: skip
    print("\n".join(lines(result)))
    return 0 if result["same"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
