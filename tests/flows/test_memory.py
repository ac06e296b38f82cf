"""Per-stage peak memory: the sampler sees an allocation that lives only inside the stage."""

from __future__ import annotations

import time

import numpy as np

from flows.memory import MB, PeakMemory, StageLog, resident_bytes


def test_peak_memory_sees_a_short_lived_allocation():
    import psutil

    before = resident_bytes(psutil.Process()) / MB
    with PeakMemory(interval=0.05) as peak:
        block = np.ones(300 * MB // 8)  # 300 MB, touched
        time.sleep(0.3)
        del block
    assert peak.mb > before + 250


def test_stage_log_records_each_stage():
    log = StageLog()
    with log.stage("small"):
        pass
    with log.stage("big"):
        # 400 MB against a 150 MB margin: the sample covers the session's whole process tree, whose other processes
        # moved the baseline by ~50 MB between two stages once (200 MB showed as 147.5 MB more, fresh clone)
        block = np.ones(400 * MB // 8)
        time.sleep(0.3)
        del block
    assert list(log.seconds) == ["small", "big"]
    assert log.peak_mb["big"] > log.peak_mb["small"] + 150
