"""The one typed settings object; build it at the entry point and pass it down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Runtime configuration; every field can be set from the environment as ``RECSYS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    state_dir: Path = Field(
        default=PROJECT_ROOT / ".state",
        description="Folder holding all runtime state: data, feature store, MLflow, Prefect, BentoML, versions.",
    )
    seed: int = Field(default=42, description="Seed for every random choice the pipeline makes.")

    demo_items: int = Field(default=20_000, gt=0)
    demo_users: int = Field(default=5_000, gt=0)
    demo_interactions: int = Field(default=300_000, gt=0)

    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="Share of each user's history held out.")
    label_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of each user's train history used as re-ranker labels."
    )

    embedding_batch_size: int = Field(default=64, gt=0)
    embedding_shard_size: int = Field(default=5000, gt=0, description="Items per embedding task on a Dask cluster.")
    dask_address: str | None = Field(
        default=None, description="Dask scheduler (tcp://host:8786): embedding and feature tasks run on that cluster."
    )
    embedding_backend: Literal["torch", "onnx-int8"] = Field(
        default="torch",
        description="Text encoder: 'torch' (sentence-transformers) or 'onnx-int8' (the same model as an int8 ONNX "
        "graph on onnxruntime, built once into the cache folder: ~2.5-3x the texts/s at cosine >= 0.99; "
        "see make bench).",
    )

    als_factors: int = Field(default=32, gt=0)
    als_regularization: float = Field(default=5.0, ge=0)
    als_iterations: int = Field(default=15, gt=0)
    als_alpha: float = Field(default=10.0, gt=0)
    als_negative_weight: float = Field(
        default=0.3, ge=0, le=1, description="ALS confidence of a non-positive interaction (positives: 1)."
    )
    ease_l2: float = Field(default=100.0, gt=0, description="EASE^R's L2 penalty (the start of its tuning).")
    rp3beta_alpha: float = Field(default=1.0, gt=0, description="RP3beta's exponent on walk probabilities.")
    rp3beta_beta: float = Field(default=0.5, ge=0, description="RP3beta's popularity penalty exponent.")
    item_knn_shrink: float = Field(default=100.0, ge=0, description="item-kNN cosine shrinkage.")
    item_knn_neighbours: int = Field(default=100, ge=0, description="item-kNN neighbours per item (0: all).")
    item_item_max_items: int = Field(
        default=12_000,
        gt=0,
        description="Item-item models (EASE^R, RP3beta, item-kNN) are fitted over the most frequent items up to this "
        "many: their fit holds dense item x item matrices (12 000 items: 0.6 GB each, float32).",
    )
    item_item_neighbours: int = Field(
        default=1000, gt=0, description="Neighbours kept per item in a published item-item table (stage-1 source)."
    )
    tuning: bool = Field(
        default=True, description="Search the peers' (and stage 1's) hyperparameters on the validation cut."
    )
    tuning_trials: int = Field(default=12, gt=0, description="Optuna trials per peer, at most.")
    tuning_seconds_per_peer: float = Field(default=120.0, gt=0, description="Time budget per peer's search.")
    tuning_max_users: int | None = Field(
        default=2000, description="Validation users each tuning trial is scored on (a seeded sample beyond)."
    )
    candidate_weights: dict[str, float] = Field(
        default={"collaborative": 1.0, "graph": 0.7, "popular": 0.5, "semantic": 0.3, "fresh": 0.1},
        description="Reciprocal-rank-fusion weight of each stage-1 source.",
    )
    candidate_reserved: dict[str, float] = Field(
        default={"fresh": 0.02, "semantic": 0.02},
        description="Share of the candidate list reserved for a source's best items before fusion fills the rest.",
    )
    graph_top_m: int = Field(default=200, gt=0, description="Neighbours kept per item in the RP3beta graph table.")
    graph_beta: float = Field(default=0.5, ge=0, description="RP3beta popularity penalty exponent.")
    graph_recent: int = Field(default=50, gt=0, description="Recent items of the user the graph source walks from.")
    graph_decay: float = Field(
        default=100.0,
        gt=0,
        description="Weight exp(-rank/decay) of the user's n-th most recent item in the graph query.",
    )
    availability_grace_days: float = Field(
        default=0.0, ge=0, description="Items launched up to this long after the query time still count as available."
    )
    popular_half_life_days: float = Field(default=14.0, gt=0)
    semantic_half_life_days: float = Field(default=30.0, gt=0)
    fresh_window_days: float = Field(default=30.0, gt=0)
    index_factory: str | None = Field(default=None, description="FAISS factory string; default: by catalogue size.")
    ann_target_recall: float = Field(default=0.95, gt=0, le=1)
    candidates_k: int = Field(
        default=200,
        gt=0,
        le=5000,
        description="Candidates per request in training and evaluation (serving uses the K the sweep chose).",
    )
    eval_max_users: int | None = Field(default=600, description="Cap on test users in evaluations (None: all).")
    recall_max_users: int | None = Field(default=500, description="Cap on test users in the stage-1 Recall@K report.")
    threads: int = Field(default=2, gt=0, description="CPU threads for torch, FAISS and LightGBM in batch steps.")

    train_max_users: int | None = Field(
        default=5000,
        description="Cap on users in the re-ranker's training set (a sample when more have labels): building it costs "
        "~16 ms per user here. On the demo catalog 2 000 users give two-stage 0.91x ALS, all 5 000 1.08x.",
    )
    ranker_rounds: int = Field(default=400, gt=0)
    ranker_learning_rate: float = Field(default=0.03, gt=0)
    ranker_leaves: int = Field(default=15, gt=1)
    ranker_min_data_in_leaf: int = Field(default=100, gt=0)
    ranker_early_stopping: int = Field(default=60, gt=0)
    ranker_feature_fraction: float = Field(default=0.7, gt=0, le=1)
    ranker_bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    ranker_lambda_l2: float = Field(default=10.0, ge=0)
    ranker_valid_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="Training users held out for early stopping."
    )
    k_tolerance: float = Field(
        default=0.01, ge=0, lt=1, description="Chosen K: smallest within this NDCG share of the best."
    )
    ablation: bool = Field(
        default=True, description="Also train without price/stock/recency features (datasets with prices)."
    )
    build_bento: bool = Field(default=True, description="End the pipeline by building the bento of the new version.")
    registered_model: str = Field(default="reranker", description="MLflow registered model name (demo dataset).")

    rules_in_stock_only: bool = Field(default=True, description="Served lists hold only items in stock.")
    rules_freshness_weight: float = Field(
        default=0.1, ge=0, description="Served lists: boost of a brand-new item, in standard deviations of the scores."
    )
    rules_freshness_half_life_days: float = Field(default=14.0, gt=0, description="Half-life of the freshness boost.")
    rules_max_per_category: float = Field(
        default=0.5, ge=0, description="Served lists: cap per category, a share of k (<= 1) or a count (> 1); 0: off."
    )

    reload_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often the service checks for a new version."
    )

    online_store: Literal["sqlite", "redis"] = Field(default="sqlite", description="Feast online store backend.")
    redis_url: str = Field(default="localhost:6379", description="Redis connection string when online_store=redis.")

    @property
    def feast_dir(self) -> Path:
        """Feast registry, SQLite online store and the parquet feature snapshots (offline store)."""
        return self.state_dir / "feast"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    @property
    def mlflow_dir(self) -> Path:
        return self.state_dir / "mlflow"

    @property
    def versions_dir(self) -> Path:
        """Published versions and the ``current`` pointer."""
        return self.state_dir / "versions"

    @property
    def cache_dir(self) -> Path:
        """Caches that are safe to delete (e.g. item embeddings by content hash)."""
        return self.state_dir / "cache"

    @property
    def work_dir(self) -> Path:
        """Intermediate outputs of pipeline steps, keyed by the hash of their inputs."""
        return self.state_dir / "work"

    @property
    def reports_dir(self) -> Path:
        return self.state_dir / "reports"

    @property
    def data_dir(self) -> Path:
        """Validated datasets, one sub-folder per dataset name."""
        return self.state_dir / "data"

    def dataset_dir(self, name: str) -> Path:
        return self.data_dir / name
