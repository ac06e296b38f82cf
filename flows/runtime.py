"""Process set-up done once at an entry point: where Prefect keeps its state, offline model loading."""

from __future__ import annotations

import os
from typing import Any

from models.settings import Settings

EPHEMERAL_STARTUP_SECONDS = 180


def prepare_environment(settings: Settings) -> None:
    """Point Prefect's home at the state folder and keep Hugging Face offline. Call before importing prefect."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # Prefect's temporary server creates and migrates its database on a new state folder; its 20 s default start-up
    # timeout is too short on a busy 2-core machine ("Timed out while attempting to connect to ephemeral Prefect API
    # server" failed a run that way), so a run waits up to EPHEMERAL_STARTUP_SECONDS unless told otherwise.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_SECONDS))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("BENTOML_HOME", str((settings.state_dir / "bentoml").resolve()))


def task_runner(settings: Settings) -> Any:  # a prefect TaskRunner (generic over its futures)
    """Prefect's Dask task runner on the configured scheduler, else a thread pool as wide as the machine allows."""
    if settings.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=settings.dask_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=settings.threads)
