"""RECSYS_TASK_PROCESSES: a heavy step can run in a process of its own, which ends with it (its memory goes back to
the operating system), and gives what the same step gives in the flow's own process."""

from __future__ import annotations

import os

import pytest
from prefect import flow, task

from flows.runtime import TASK_PROCESSES_VARIABLE, run_step, task_processes


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
