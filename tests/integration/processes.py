"""Running a server in a subprocess for a test: wait until it listens, end its whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import bentoml
import pytest
from bentoml.exceptions import ServiceUnavailable

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
