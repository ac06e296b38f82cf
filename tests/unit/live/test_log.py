"""The live log: ordered, shared between processes, atomic per batch, durable once acknowledged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.live.log import EVENT, ITEM, EventLog


def test_batches_keep_their_order_and_every_process_sees_them(tmp_path: Path):
    path = tmp_path / "log.sqlite"
    writer, reader = EventLog(path), EventLog(path)
    assert writer.append(EVENT, [{"n": 1}, {"n": 2}]) == [1, 2]
    assert writer.append(ITEM, [{"n": 3}]) == [3]
    records = reader.read_after(0)
    assert [(r.seq, r.kind, r.body["n"]) for r in records] == [(1, EVENT, 1), (2, EVENT, 2), (3, ITEM, 3)]
    assert [r.seq for r in reader.read_after(2)] == [3]
    assert reader.last_seq() == 3


def test_a_failing_batch_writes_nothing(tmp_path: Path):
    log = EventLog(tmp_path / "log.sqlite")
    log.append(EVENT, [{"n": 1}])
    with pytest.raises(TypeError):
        log.append(EVENT, [{"n": 2}, {"n": object()}])  # the second body cannot be serialised
    with pytest.raises(ValueError, match="unknown log record kind"):
        log.append("other", [{"n": 3}])
    assert [r.body["n"] for r in log.read_after(0)] == [1]


def test_an_acknowledged_batch_survives_a_killed_process(tmp_path: Path):
    path = tmp_path / "log.sqlite"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from models.live.log import EventLog\n"
        f"log = EventLog(Path({str(path)!r}))\n"
        "log.append('event', [{'n': i} for i in range(100)])\n"
        "print('acknowledged', flush=True)\n"
        "os._exit(9)  # no close, no checkpoint\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "acknowledged" and done.returncode == 9, done.stderr
    assert [r.body["n"] for r in EventLog(path).read_after(0)] == list(range(100))
