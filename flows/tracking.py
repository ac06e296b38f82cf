"""MLflow helpers the flows share: where the tracking store lives, the dataset every run logs as its input, and
the plots.

The tracking URI is set by the caller (``configure_mlflow``) at the entry point, never at import time. Figures are
``matplotlib.figure.Figure`` objects drawn without pyplot, so no GUI backend is ever selected or needed.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.parquet as pq
from matplotlib import colormaps
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import infer_signature
from mlflow.types import ColSpec, Schema

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
"""The MLflow 3 UI opens an experiment without this tag in GenAI mode (traces, judges); with it, in model-training
mode (runs table, metrics, compare)."""

DIGEST_CHARS = 16
"""A dataset input's digest is the data fingerprint cut to the length the runs' ``data_fingerprint`` tag uses (MLflow
stores at most 36 characters)."""


def tracking_uri(mlflow_dir: Path) -> str:
    return f"sqlite:///{(mlflow_dir / 'mlflow.db').resolve()}"


def configure_mlflow(mlflow_dir: Path, experiment: str) -> str:
    """Point MLflow at the SQLite store under the state folder and select ``experiment``; returns its id."""
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(mlflow_dir))
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is None:
        artifacts = (mlflow_dir / "artifacts" / experiment).resolve().as_uri()
        experiment_id = mlflow.create_experiment(
            experiment, artifact_location=artifacts, tags={EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT}
        )
    else:
        experiment_id = existing.experiment_id
        if EXPERIMENT_KIND_TAG not in existing.tags:  # created before the tag was set: the UI would open GenAI mode
            MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT)
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


class SavedDataset(MetaDataset):
    """A saved dataset folder as an MLflow dataset: described from the interactions table's Parquet footer (schema,
    row count), so logging it reads no rows and copies nothing — the data stays where the flows read it."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        folder = Path(folder).resolve()
        footer = pq.ParquetFile(folder / "interactions.parquet")
        self._rows = footer.metadata.num_rows
        self._columns = footer.metadata.num_columns
        self._counts = {t: pq.read_metadata(folder / f"{t}.parquet").num_rows for t in ("items", "users")}
        with warnings.catch_warnings():  # MLflow registers its local source under two schemes and warns about it
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            source = resolve_dataset_source(str(folder))
        super().__init__(source, name=folder.name, digest=fingerprint[:DIGEST_CHARS], schema=table_schema(footer))

    @property
    def profile(self) -> dict[str, int]:
        return {"num_rows": self._rows, "num_elements": self._rows * self._columns, **self._counts}

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self.profile)}


def table_schema(footer: pq.ParquetFile) -> Schema:
    """The MLflow schema of a Parquet table from its footer: column types from the Arrow schema, ``required`` from
    the row groups' null counts (a column whose statistics are missing reads as optional)."""
    inferred = infer_signature(footer.schema_arrow.empty_table().to_pandas()).inputs
    metadata = footer.metadata
    nulls: dict[str, int | None] = {}
    for group in range(metadata.num_row_groups):
        for index in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(index)
            stats = chunk.statistics if chunk.is_stats_set else None
            count = stats.null_count if stats is not None and stats.has_null_count else None
            so_far = nulls.get(chunk.path_in_schema, 0)
            nulls[chunk.path_in_schema] = None if so_far is None or count is None else so_far + count
    return Schema([ColSpec(spec.type, spec.name, required=nulls.get(str(spec.name)) == 0) for spec in inferred.inputs])


def log_dataset(dataset_dir: str | Path, fingerprint: str, context: str) -> SavedDataset:
    """Log the saved dataset as the active run's input: name (the dataset's), digest (its data fingerprint, so two
    runs on the same data show the same digest), source (the saved folder), schema and row count."""
    dataset = SavedDataset(Path(dataset_dir), fingerprint)
    mlflow.log_input(dataset, context=context)
    return dataset


MLFLOW_UI = "http://127.0.0.1:5000"
"""Where ``make ui`` serves the MLflow UI."""


def experiment_url(experiment_id: str, base: str = MLFLOW_UI) -> str:
    """The experiment's runs table in model-training mode. MLflow 3.17's UI takes its mode from the address's
    ``workflowType`` (else the browser's last choice, GenAI by default) rather than the experiment's kind tag, so
    the links this project prints say it."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def experiment_links(mlflow_dir: Path, base: str = MLFLOW_UI) -> list[str]:
    """'name: url' for every experiment of the store (none when there is no store yet)."""
    if not (mlflow_dir / "mlflow.db").exists():
        return []
    mlflow.set_tracking_uri(tracking_uri(mlflow_dir))
    return [f"{e.name}: {experiment_url(e.experiment_id, base)}" for e in mlflow.search_experiments()
            if e.name != "Default"]  # fmt: skip


def flat_metrics(prefix: str, values: Mapping[str, Mapping[Any, float]]) -> dict[str, float]:
    """{"semantic": {100: 0.2}} → {"prefix_semantic_at_100": 0.2} (MLflow metric names allow no '@')."""
    return {f"{prefix}_{name}_at_{k}": float(v) for name, by_k in values.items() for k, v in by_k.items()}


def recall_curve_figure(recall: Mapping[str, Mapping[int, float]], title: str = "Stage-1 Recall@K") -> Figure:
    figure = Figure(figsize=(8, 4.5))
    axis = figure.subplots()
    colours = [colormaps["tab20"](i) for i in range(20)]  # a colour per source (the default cycle repeats after ten)
    for position, (name, by_k) in enumerate(recall.items()):
        ks = sorted(by_k)
        merged = name == "merged"
        axis.plot(ks, [by_k[k] for k in ks], marker="o", label=name, linewidth=2.8 if merged else 1.2,
                  color="black" if merged else colours[position % len(colours)])  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("K (candidates)")
    axis.set_ylabel("Recall@K")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the curves, not over them
    figure.tight_layout()
    return figure


def log_figure(figure: Figure, name: str) -> None:
    mlflow.log_figure(figure, name)


def figure_bar(values: Mapping[str, float], title: str) -> Figure:
    """Horizontal bars, largest on top (feature importance)."""
    names = list(values)[::-1]
    figure = Figure(figsize=(7, max(3.0, 0.28 * len(names))))
    axis = figure.subplots()
    axis.barh(names, [values[n] for n in names])
    axis.set_title(title)
    figure.tight_layout()
    return figure


def figure_lines(series: Mapping[str, Mapping[Any, float]], title: str, xlabel: str, ylabel: str) -> Figure:
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for name, points in series.items():
        xs = sorted(points)
        axis.plot(xs, [points[x] for x in xs], marker="o", label=name)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure
