"""RECSYS_TASK_PROCESSES: a heavy step can run in a process of its own, which ends with it (its memory goes back to
the operating system), and gives what the same step gives in the flow's own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import flow, task

from flows.runtime import TASK_PROCESSES_VARIABLE, run_step, task_processes
from models.settings import PROJECT_ROOT


@task
def where_and_what(numbers: list[int], scale: int = 1) -> tuple[int, int]:
    """The process that ran the step and the step's result."""
    return os.getpid(), scale * sum(numbers)


@task
def refuse(reason: str) -> None:
    raise ValueError(reason)


@flow
def one_step(numbers: list[int], scale: int) -> tuple[int, int]:
    return run_step(where_and_what, numbers, scale=scale)


@flow
def failing_step() -> None:
    run_step(refuse, "bad input named here")


def test_a_step_runs_in_the_flows_process_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TASK_PROCESSES_VARIABLE, raising=False)
    assert one_step([1, 2, 3], 2) == (os.getpid(), 12)


def test_with_task_processes_a_step_runs_in_a_fresh_process_and_gives_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TASK_PROCESSES_VARIABLE, "true")
    first_pid, result = one_step([1, 2, 3], 2)
    second_pid, _ = one_step([4], 1)
    assert result == 12
    assert os.getpid() != first_pid != second_pid  # one process per step, none reused


def test_a_failing_step_in_its_own_process_fails_the_flow_with_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TASK_PROCESSES_VARIABLE, "true")
    with pytest.raises(ValueError, match="bad input named here"):
        failing_step()


def test_an_unreadable_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TASK_PROCESSES_VARIABLE, "sometimes")
    with pytest.raises(ValueError, match="RECSYS_TASK_PROCESSES='sometimes'"):
        task_processes()


TWO_STEPS_ON_A_TEMPORARY_SERVER = """
from models.settings import Settings
from flows.runtime import prepare_environment
prepare_environment(Settings(state_dir={state!r}))
from prefect import flow
from flows.runtime import run_step
from tests.flows.test_task_processes import where_and_what

@flow
def two_steps():
    return [run_step(where_and_what, [1, 2]), run_step(where_and_what, [3])]

print("results", [result for _, result in two_steps()])
"""


def test_step_processes_report_to_the_flows_temporary_server_instead_of_starting_their_own(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RECSYS_"))}
    env |= {TASK_PROCESSES_VARIABLE: "true", "PYTHONPATH": str(PROJECT_ROOT)}
    script = TWO_STEPS_ON_A_TEMPORARY_SERVER.format(state=str(tmp_path / "state"))
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "results [3, 3]" in output
    assert output.count("Starting temporary server") == 1, output[-3000:]
