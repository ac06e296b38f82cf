"""``make demo`` (``scripts/demo.sh``) as a new user runs it, on a small demo catalogue: nothing served yet, so the
quick profile publishes a first look that is served at once; the full pipeline runs behind the service and the
service switches to its version; Ctrl-C ends everything the demo started; a second run serves what is published
without another first look."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from models.recommender.versions import read_manifest
from models.settings import PROJECT_ROOT
from tests.serving.support import free_port

pytestmark = pytest.mark.integration

DEMO = PROJECT_ROOT / "scripts" / "demo.sh"
SMALL = {
    "RECSYS_DEMO_ITEMS": "1500", "RECSYS_DEMO_USERS": "400", "RECSYS_DEMO_INTERACTIONS": "20000",
    "RECSYS_EVAL_MAX_USERS": "200", "RECSYS_TRAIN_MAX_USERS": "400", "RECSYS_ALS_ITERATIONS": "8",
    "RECSYS_ALS_FACTORS": "16", "RECSYS_RANKER_ROUNDS": "60", "RECSYS_RANKER_FOLDS": "2", "RECSYS_TUNING_TRIALS": "2",
    "RECSYS_ITEM_ITEM_NEIGHBOURS": "200", "RECSYS_RELOAD_INTERVAL_SECONDS": "1", "RECSYS_SERVE_WORKERS": "1",
    "RECSYS_BUILD_BENTO": "false",
}  # fmt: skip
"""The pipeline tests' small catalogue (tests/conftest.py:small_settings); each field set here wins over a profile."""
STEP_TIMEOUT = 600.0
AS_A_TERMINAL_RUNS_IT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp('bash', ['bash', sys.argv[1]])"
)
"""Start the script with SIGINT at its default, as a terminal's foreground job has it: a runner started in the
background (CI) ignores SIGINT, every child inherits that, and bash cannot trap a signal ignored on entry."""


class Demo:
    """The script in a session of its own (its own process group, as a terminal's foreground job), its output read
    line by line."""

    def __init__(self, state: Path, port: int, **extra: str):
        environment = {k: v for k, v in os.environ.items()
                       if not k.startswith(("PREFECT_", "BENTOML_", "RECSYS_"))}  # fmt: skip
        environment.update(SMALL, RECSYS_STATE_DIR=str(state), PORT=str(port), BENTOML_DO_NOT_TRACK="true", **extra)
        command = [sys.executable, "-c", AS_A_TERMINAL_RUNS_IT, str(DEMO)]
        self.process = subprocess.Popen(command, cwd=state.parent, env=environment, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = STEP_TIMEOUT, failure: str | None = None) -> str:
        """The first line holding ``text``; fails at once on a line holding ``failure``, or when the script ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
            if failure and failure in line:
                break
        tail = "\n".join(self.seen[-60:])
        pytest.fail(f"{text!r} not printed (exit code {self.process.poll()}); the demo printed:\n{tail}")

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the foreground process group, which is the script's."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=60)


def processes_of(state: Path) -> list[int]:
    """Processes started for this state folder: everything the demo starts inherits its RECSYS_STATE_DIR."""
    marker = f"RECSYS_STATE_DIR={state}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue  # gone, or not ours to read
    return found


@pytest.fixture(scope="module")
def demo_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One state folder for the module: the second test runs the demo again on what the first published."""
    state = tmp_path_factory.mktemp("demo") / "state"
    yield state
    for pid in processes_of(state):  # whatever a failed test left running
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def running_pipelines(state: Path) -> list[int]:
    found = []
    for pid in processes_of(state):
        with contextlib.suppress(OSError):
            if b"flows.cli\0pipeline" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def built_with(state: Path, version: str) -> tuple[str, str, int]:
    """A version's profile as recorded, and its text encoder and item-item cap: what that profile set."""
    manifest = read_manifest(state / "versions" / "demo" / version)
    stage1 = manifest["stage1"]
    return manifest["build"]["profile"], str(stage1["embedding"]["model"]), int(stage1["config"]["item_item_max_items"])


def wait_until(condition: Callable[[], bool], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while not (met := condition()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return met


def served_version(port: int) -> str:
    answer = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"user_id": "u00001", "k": 3}, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["version"])


def listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)
    except httpx.TransportError:
        return False
    return True


def test_first_look_then_the_full_version_then_ctrl_c_stops_everything(demo_state: Path):
    port = free_port()
    demo = Demo(demo_state, port)
    demo.wait_for("first look: the quick profile publishes a version")
    demo.wait_for("demo ready after")
    first = served_version(port)
    assert built_with(demo_state, first) == ("quick", "static", 4000)

    demo.wait_for("the full pipeline finished", failure="the full pipeline failed")
    release = demo.wait_for("release decision:")
    assert f"replaces the first look {first} (--profile quick: a stand-in" in release, release  # not --force
    assert wait_until(lambda: served_version(port) != first), "the service still serves the first look"
    profile, encoder, item_item_items = built_with(demo_state, served_version(port))
    assert profile == "full" and encoder != "static" and item_item_items == 12_000

    assert demo.interrupt() == 130
    assert wait_until(lambda: not listening(port)), "the service outlived Ctrl-C"
    assert wait_until(lambda: not processes_of(demo_state)), "processes of the demo outlived Ctrl-C"


def test_a_second_run_serves_the_published_version_at_once_and_ctrl_c_stops_its_pipeline(demo_state: Path):
    current = demo_state / "versions" / "demo" / "current"
    if not current.exists():
        pytest.skip("runs on the state the test before publishes")
    published = current.resolve().name
    port = free_port()
    again = Demo(demo_state, port)
    again.wait_for(f"serving the published version {published}")
    again.wait_for("demo ready after")
    assert served_version(port) == published
    again.wait_for("the full pipeline runs behind the service")
    assert not any("first look" in line for line in again.seen)
    assert wait_until(lambda: bool(running_pipelines(demo_state)), 30), "no pipeline runs behind the service"
    assert again.interrupt() == 130  # Ctrl-C while the full pipeline runs
    assert wait_until(lambda: not processes_of(demo_state)), "the pipeline behind the service outlived Ctrl-C"
