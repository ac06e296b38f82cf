"""Progress bars: they count what the step did, draw rarely in a log file, and RECSYS_PROGRESS=0 turns them off."""

from __future__ import annotations

import io

import pytest

from models.progress import progress


def test_a_bar_counts_every_item_and_ends_at_the_total() -> None:
    stream = io.StringIO()
    assert list(progress(range(7), desc="scoring users", unit="user", stream=stream)) == list(range(7))
    text = stream.getvalue()
    assert "scoring users" in text and "7/7" in text and "user" in text


def test_a_bar_updated_by_hand_reaches_its_total() -> None:
    stream = io.StringIO()
    with progress(desc="index 3 vectors", total=3, stream=stream) as bar:
        bar.update(2)
        bar.update(1)
    assert "3/3" in stream.getvalue()


def test_a_log_file_gets_few_redraws() -> None:
    stream = io.StringIO()  # not a terminal: at most one redraw per 30 s
    for _ in progress(range(10_000), desc="many", stream=stream):
        pass
    assert stream.getvalue().count("\r") <= 3


def test_bars_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_PROGRESS", "0")
    stream = io.StringIO()
    assert sum(progress(range(5), desc="quiet", stream=stream)) == 10
    assert stream.getvalue() == ""
