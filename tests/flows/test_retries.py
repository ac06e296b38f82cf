"""The pipeline's tasks retry what a second try may fix (I/O), never a deterministic error: invalid data fails the
same way on every try, and retrying it only delays the message."""

from __future__ import annotations

import pytest
from prefect import flow, task

from flows.common import IO_RETRIES
from flows.pipeline import prepare_dataset
from models.data.contract import DataValidationError
from models.files import ArtifactError


def run_failing(error: Exception) -> int:
    calls = []

    @task(**{**IO_RETRIES, "retry_delay_seconds": 0})
    def step() -> None:
        calls.append(1)
        raise error

    @flow
    def pipeline() -> None:
        step()

    with pytest.raises(type(error)):
        pipeline()
    return len(calls)


@pytest.mark.parametrize("error", [DataValidationError("items.csv: 1 duplicate id"), ArtifactError("x: missing"),
                                   KeyError("column")])  # fmt: skip
def test_deterministic_errors_are_not_retried(error):
    assert run_failing(error) == 1


def test_io_errors_are_retried_twice():
    assert run_failing(OSError("disk busy")) == 3


def test_the_data_step_uses_this_policy():
    assert prepare_dataset.retries == 2 and prepare_dataset.retry_condition_fn is IO_RETRIES["retry_condition_fn"]
