"""Running a server in a subprocess for a test: wait until it listens, end its whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bentoml
import pytest
from bentoml.exceptions import ServiceUnavailable

from models.settings import PROJECT_ROOT
from tests.serving.support import free_port

STARTUP_FAILED = ("Initializing service error", "Application startup failed")
"""What BentoML logs when the service's ``__init__`` raises; it then restarts the worker, again and again."""
READY_TIMEOUT = 240.0  # ≈ 6.5 s on an idle 2-core machine (STACK.md), far more while other jobs load it


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def stop(process: subprocess.Popen) -> int | None:
    """SIGTERM to the server's process group, SIGKILL to whatever is left of it after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        code = None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers that outlived the arbiter, if any
    if code is None:
        process.wait(timeout=10)
    return code


def check_starting(process: subprocess.Popen, log: Path) -> None:
    """Fail now, with the server's log, if it exited or its service failed to start."""
    if process.poll() is not None:
        pytest.fail(f"the server exited with {process.returncode}:\n{tail(log)}")
    text = log.read_text(errors="replace") if log.exists() else ""
    if any(marker in text for marker in STARTUP_FAILED):
        pytest.fail(f"the service failed to start:\n{tail(log, 60)}")


def wait_for_port(process: subprocess.Popen, port: int, log: Path) -> None:
    """Until the server listens (cheap polling: the client's own readiness loop does not sleep between tries)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        check_starting(process, log)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"nothing listens on port {port} after {READY_TIMEOUT} s:\n{tail(log)}")


def wait_until_ready(process: subprocess.Popen, url: str, log: Path) -> bentoml.SyncHTTPClient:
    """A client once ``/readyz`` answers 200: ``SyncHTTPClient`` waits for readiness, in short rounds, so that a
    service that keeps failing to start (BentoML restarts its worker forever) fails the test within seconds."""
    port = int(url.rsplit(":", 1)[1])
    wait_for_port(process, port, log)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        check_starting(process, log)
        try:
            return bentoml.SyncHTTPClient(
                url, timeout=30, server_ready_timeout=5, token=os.environ.get("RECSYS_ADMIN_TOKEN")
            )
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                pytest.fail(f"{url} not ready after {READY_TIMEOUT} s:\n{tail(log)}")


SERVE = PROJECT_ROOT / "scripts" / "serve.sh"


@dataclass
class Served:
    url: str
    client: bentoml.SyncHTTPClient
    process: subprocess.Popen
    log: Path


@contextlib.contextmanager
def served(state_dir: Path, home: Path, **environment: str | None) -> Iterator[Served]:
    """``scripts/serve.sh`` (``make serve``) on ``state_dir``, on a free port and in its own process group, started
    from ``home`` (the script moves to the repo root itself) with ``home`` as BentoML's home; yielded once ready and
    ended whatever happens. ``environment``: more variables (a None value removes one); version reloads happen on
    request unless RECSYS_RELOAD_INTERVAL_SECONDS says otherwise."""
    port = free_port()
    env = {**os.environ, "RECSYS_STATE_DIR": str(state_dir), "RECSYS_RELOAD_INTERVAL_SECONDS": "3600",
           "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "PORT": str(port)}  # fmt: skip
    for name, value in environment.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    log = home / f"serve-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["bash", str(SERVE)], cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        client = wait_until_ready(process, url, log)
        try:
            yield Served(url, client, process, log)
        finally:
            client.close()
    finally:
        stop(process)
