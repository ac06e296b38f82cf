"""Process set-up done once at an entry point: where Prefect keeps its state, offline model loading."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from models.settings import Settings

if TYPE_CHECKING:  # prefect reads its settings on import: prepare_environment must run first
    from prefect import Task

R = TypeVar("R")

TASK_PROCESSES_VARIABLE = "RECSYS_TASK_PROCESSES"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

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


def task_processes() -> bool:
    """``RECSYS_TASK_PROCESSES=true``: each heavy pipeline step runs in a process of its own. An orchestration choice,
    read from the environment (the library never sees it). It keeps the flow's own process small (1.1-1.5 GB in the
    1 M build at 574ed68) but did not lower that build's peak (21.9 GB summed over the processes): the re-ranker's
    step alone reached 13.7 GB."""
    value = os.environ.get(TASK_PROCESSES_VARIABLE, "").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"{TASK_PROCESSES_VARIABLE}={value!r}: expected true or false")
    return value in _TRUE


def task_runner(settings: Settings) -> Any:  # a prefect TaskRunner (generic over its futures)
    """Prefect's Dask task runner on the configured scheduler; else, with task processes, a process pool; else a
    thread pool; as wide as the machine allows."""
    if settings.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=settings.dask_address)
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if task_processes():
        return ProcessPoolTaskRunner(max_workers=settings.threads)
    return ThreadPoolTaskRunner(max_workers=settings.threads)


def run_step(step: Task[..., R], *args: Any, **kwargs: Any) -> R:
    """Call a pipeline task here, or with task processes in a fresh process that ends with it, so the operating
    system gets back every page the step touched (a few seconds of process start per step: worth it for catalogues
    of about a million items, not for the demo). Same task, same cache, same result either way."""
    if not task_processes():
        return step(*args, **kwargs)
    from prefect.task_runners import ProcessPoolTaskRunner

    parameters = dict(inspect.signature(step.fn).bind(*args, **kwargs).arguments)
    with step_processes_share_this_api(), ProcessPoolTaskRunner(max_workers=1) as runner:
        return runner.submit(step, parameters).result()


@contextmanager
def step_processes_share_this_api() -> Iterator[None]:
    """Processes started inside reach this process's Prefect API. With Prefect's temporary server (no
    PREFECT_API_URL) each step process would otherwise start a server of its own: seconds per step, and several
    servers writing one SQLite database."""
    if not task_processes() or os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        yield
        return
    server = SubprocessASGIServer()  # the temporary server this process runs, started if it is not yet
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url  # inherited by the processes started in the block
    try:
        yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)
