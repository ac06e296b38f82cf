"""MLflow helpers the flows share: where the tracking store lives, and the plots every run logs.

The tracking URI is set by the caller (``configure_mlflow``) at the entry point, never at import time. Figures are
``matplotlib.figure.Figure`` objects drawn without pyplot, so no GUI backend is ever selected or needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from matplotlib.figure import Figure


def tracking_uri(mlflow_dir: Path) -> str:
    return f"sqlite:///{(mlflow_dir / 'mlflow.db').resolve()}"


def configure_mlflow(mlflow_dir: Path, experiment: str) -> str:
    """Point MLflow at the SQLite store under the state folder and select ``experiment``; returns its id."""
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(mlflow_dir))
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is None:
        artifacts = (mlflow_dir / "artifacts" / experiment).resolve().as_uri()
        experiment_id = mlflow.create_experiment(experiment, artifact_location=artifacts)
    else:
        experiment_id = existing.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def flat_metrics(prefix: str, values: Mapping[str, Mapping[Any, float]]) -> dict[str, float]:
    """{"semantic": {100: 0.2}} → {"prefix_semantic_at_100": 0.2} (MLflow metric names allow no '@')."""
    return {f"{prefix}_{name}_at_{k}": float(v) for name, by_k in values.items() for k, v in by_k.items()}


def recall_curve_figure(recall: Mapping[str, Mapping[int, float]], title: str = "Stage-1 Recall@K") -> Figure:
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for name, by_k in recall.items():
        ks = sorted(by_k)
        axis.plot(ks, [by_k[k] for k in ks], marker="o", label=name, linewidth=2.5 if name == "merged" else 1.2)
    axis.set_xscale("log")
    axis.set_xlabel("K (candidates)")
    axis.set_ylabel("Recall@K")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend()
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
