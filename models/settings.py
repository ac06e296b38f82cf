"""The one typed settings object; build it at the entry point and pass it down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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
    embedding_backend: Literal["auto", "torch", "onnx-int8", "static"] = Field(
        default="torch",
        description="Text encoder: 'torch' (sentence-transformers), 'onnx-int8' (the same model as an int8 ONNX "
        "graph on onnxruntime, built once into the cache folder: ~2.4-3x the texts/s; see make bench), 'auto': "
        "onnx-int8 when it passes its check on the catalogue's own texts, else torch, or 'static' (the model "
        "distilled into one vector per token: a table lookup, for catalogues too large to encode with a "
        "transformer on the machine at hand; other vectors, see README). Not the default: on the demo "
        "catalogue int8 vectors gave the re-ranker 0.96x the NDCG@10 (paired 95 % interval 0.90-1.02x, README).",
    )
    embedding_check_texts: int = Field(
        default=256, gt=0, description="'auto': catalogue texts (seeded, longest and shortest included) compared."
    )
    embedding_min_cosine: float = Field(
        default=0.99, gt=0, le=1, description="'auto': the int8 encoder is used when no checked vector is further."
    )

    als_factors: int = Field(default=128, gt=0, description="iALS factors (the start of its tuning).")
    als_regularization: float = Field(default=10.0, ge=0, description="iALS L2 penalty.")
    als_iterations: int = Field(default=15, gt=0)
    als_alpha: float = Field(default=2.0, gt=0, description="iALS confidence scale of an interaction.")
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
        default={
            "ease": 1.0, "rp3beta": 1.0, "item_knn": 1.0, "ials": 1.0, "ease_recent": 1.0, "sequence": 1.0,
            "cooc_last": 0.0, "cooc_recent": 0.0, "popular_short": 1.0, "popular_long": 1.0, "semantic": 0.0,
            "fresh": 0.0,
        },
        description="Reciprocal-rank-fusion weight of each stage-1 source (0: retrieved for features only); the start "
        "of the fusion search on the validation cut.",
    )  # fmt: skip
    candidate_reserved: dict[str, float] = Field(
        default={},
        description="Share of the candidate list reserved for a source's best items before fusion fills the rest.",
    )
    fusion_tuning: bool = Field(default=True, description="Choose the fusion weights on the validation cut.")
    item_item_history: int = Field(
        default=500, gt=0, description="Most recent items of a user the EASE / RP3beta / item-kNN sources walk from."
    )
    recent_items: int = Field(
        default=5, gt=0, description="The user's last items the session sources (ease_recent, co-occurrence) use."
    )
    sequence_window: int = Field(default=5, gt=0, description="Steps ahead counted as 'came next' in sequences.")
    availability_grace_days: float = Field(
        default=0.0, ge=0, description="Items launched up to this long after the query time still count as available."
    )
    popular_short_half_life_days: float = Field(default=7.0, gt=0, description="Trending popularity's half-life.")
    popular_long_half_life_days: float = Field(default=90.0, gt=0, description="Steady popularity's half-life.")
    semantic_half_life_days: float = Field(default=30.0, gt=0)
    fresh_window_days: float = Field(default=30.0, gt=0)
    index_factory: str | None = Field(default=None, description="FAISS factory string; default: by catalogue size.")
    ann_target_recall: float = Field(default=0.95, gt=0, le=1)
    candidates_k: int = Field(
        default=500,
        gt=0,
        le=5000,
        description="The largest candidate-set size considered: the training set holds this many per user and the "
        "K sweep (on the validation cut) picks the served K among the sizes up to it.",
    )
    k_sweep: tuple[int, ...] = Field(default=(50, 100, 200, 500), description="Candidate-set sizes compared.")
    eval_max_users: int | None = Field(
        default=10_000, description="Test users evaluated (the protocol's all, up to this many: a sample beyond)."
    )
    recall_max_users: int | None = Field(
        default=10_000, description="Test users of the stage-1 Recall@K report (a sample beyond)."
    )
    threads: int = Field(default=2, gt=0, description="CPU threads for torch, FAISS and LightGBM in batch steps.")

    train_max_users: int | None = Field(
        default=20_000,
        description="Users in the re-ranker's training set (every validation-cut user with a positive, up to this "
        "many: a seeded sample beyond).",
    )
    ranker_rounds: int = Field(default=2000, gt=0, description="Boosting rounds at most (early stopping decides).")
    ranker_learning_rate: float = Field(default=0.05, gt=0)
    ranker_leaves: int = Field(default=31, gt=1)
    ranker_min_data_in_leaf: int = Field(default=100, gt=0)
    ranker_early_stopping: int = Field(default=50, gt=0)
    ranker_feature_fraction: float = Field(default=0.8, gt=0, le=1)
    ranker_bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    ranker_lambda_l2: float = Field(default=10.0, ge=0)
    ranker_grid: tuple[tuple[int, int], ...] = Field(
        default=((15, 50), (31, 100), (63, 200)),
        description="(leaves, min rows per leaf) pairs cross-validated at the chosen K; the best is trained.",
    )
    ranker_folds: int = Field(
        default=3, ge=2, description="User folds of the re-ranker's cross-validation on the validation cut."
    )
    k_standard_errors: float = Field(
        default=1.0,
        ge=0,
        description="Chosen K: the smallest whose out-of-fold NDCG@10 deficit to the best K, paired over the same "
        "users, is within this many standard errors (0: the best K).",
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
    live_poll_seconds: float = Field(
        default=0.2, gt=0, description="How often each worker applies what others appended to the live log."
    )
    impressions_flush_rows: int = Field(
        default=5_000, gt=0, description="Shown items a worker buffers before writing an impression file."
    )
    impressions_flush_seconds: float = Field(
        default=10.0, gt=0, description="A worker writes its buffered impressions at least this often."
    )
    impressions_retention_days: float = Field(
        default=30.0, gt=0, description="Impression partitions (one per day) older than this are deleted."
    )
    training_impressions: bool = Field(
        default=False,
        description="The re-ranker also trains on logged served lists and their outcomes (shown, not clicked: a "
        "negative); see the impression simulation in README.",
    )
    impression_attribution_hours: float = Field(
        default=24.0, gt=0, description="An event without a request_id is credited to a list shown this recently."
    )

    namespace: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        description="The deployment: its own published versions, online store, live log, impressions and registered "
        "model. A pipeline publishes to it (default: the dataset's name); a service serves it (default: the only "
        "one published).",
    )
    release_min_gain: float = Field(
        default=0.0,
        ge=-1,
        description="A new version is served only when the low end of the paired 95 % interval of its NDCG@10 over "
        "the champion's on the release holdout, minus 1, is above this (0: a significant gain; -0.01: not worse than 1 %); "
        "otherwise it is kept as the challenger. `--force` publishes anyway.",
    )
    release_holdout_share: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Validation users (a stable hash of the id: the same users in every run) the final re-ranker "
        "never trains on; the release gate compares a new version with the champion on them, both out of sample.",
    )
    release_gate_users: int = Field(
        default=20, gt=0, description="Known users the publish gate ranks through the full path (online store)."
    )
    challenger_mode: Literal["off", "shadow", "split"] = Field(
        default="off",
        description="Serve the challenger beside the champion: 'shadow' scores every request with both and answers "
        "the champion's list; 'split' answers a stable share of users with the challenger's.",
    )
    challenger_share: float = Field(
        default=0.1, ge=0, le=1, description="Split mode: the share of users (by a stable hash) the challenger serves."
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the endpoints that change the service (/reload, /promote, /rollback, /events, "
        "/items); unset: they answer 403.",
    )
    memory_map: bool = Field(
        default=True,
        description="The service memory-maps a version's FAISS indexes, item-item tables, iALS factors and text "
        "vectors (read-only): its workers share one copy in the page cache. false: each worker reads its own.",
    )
    max_body_bytes: int = Field(default=1 << 20, gt=0, description="Larger request bodies are refused with 413.")
    host: str = Field(default="127.0.0.1", description="Address the service binds (scripts/serve.sh).")

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
    def versions_root(self) -> Path:
        """One folder of published versions per namespace."""
        return self.state_dir / "versions"

    @property
    def versions_dir(self) -> Path:
        """The namespace's published versions and its ``current``, ``challenger`` and ``previous`` pointers."""
        if self.namespace is None:
            raise ValueError("no namespace chosen: set RECSYS_NAMESPACE (the pipeline uses the dataset's name)")
        return self.versions_root / self.namespace

    def deployment(self, dataset: str) -> str:
        """The namespace of ``dataset``'s state: the one set, else the dataset's name."""
        return self.namespace or dataset

    def for_dataset(self, dataset: str) -> Settings:
        """These settings with the namespace resolved for ``dataset`` (how the pipeline and tools address it)."""
        return self.model_copy(update={"namespace": self.deployment(dataset)})

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
