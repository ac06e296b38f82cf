"""The memory section reads /proc right: its own process, a memory-mapped file shared with a forked child, the
worker rule on BentoML's command lines, and the report table."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from bench.memory import compare, parse_rollup, process_memory, role, summarize
from bench.report import render

FILE_MIB = 32

ROLLUP = """00400000-7ffc622c6000 ---p 00000000 00:00 0                           [rollup]
Rss:              503888 kB
Pss:              369547 kB
Pss_Dirty:        332696 kB
Pss_Anon:         332680 kB
Shared_Clean:     170196 kB
Shared_Dirty:          4 kB
Private_Clean:       996 kB
Private_Dirty:    332692 kB
Referenced:       503888 kB
"""


def test_parse_rollup_reads_each_field_by_name() -> None:
    assert parse_rollup(ROLLUP) == {"Rss": 503888, "Pss": 369547, "Shared_Clean": 170196, "Shared_Dirty": 4,
                                    "Private_Clean": 996, "Private_Dirty": 332692}  # fmt: skip
    with pytest.raises(ValueError, match="Pss"):
        parse_rollup(ROLLUP.replace("Pss:", "Pss_Total:"))


def test_process_memory_of_this_process() -> None:
    tolerance = 2.0  # MiB: the figures are read at slightly different moments and rounded to 0.1 MiB
    m = process_memory(os.getpid())
    assert m["pid"] == os.getpid() and "pytest" in m["cmdline"]
    assert m["rss_mib"] > 10 and m["pss_mib"] <= m["rss_mib"] + tolerance
    assert m["private_mib"] <= m["rss_mib"] + tolerance
    assert abs(m["private_mib"] + m["shared_mib"] - m["rss_mib"]) <= tolerance  # the kernel's Rss is their sum
    assert abs(m["rss_mib"] - psutil.Process().memory_info().rss / 2**20) <= 16  # statm agrees with smaps_rollup
    with pytest.raises(ProcessLookupError):
        process_memory(2**22 + 1)  # above the kernel's pid_max limit: never a live process


def _child(path: Path, parent_holds: np.ndarray, pipe: Connection) -> None:
    """Open the file mapped, read it whole, report the shared and proportional memory before and after."""
    del parent_holds  # the parent's mapping stays in the parent; the child maps the file again
    before = process_memory(os.getpid())
    array = np.load(path, mmap_mode="r")
    float(array.sum())  # touch every page
    pipe.send((before, process_memory(os.getpid())))
    pipe.close()


def test_a_mapped_file_read_by_two_processes_is_shared(tmp_path: Path) -> None:
    path = tmp_path / "vectors.npy"
    np.save(path, np.arange(FILE_MIB * 2**20 // 8, dtype=np.float64))
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)  # written back, as a published version is: pages not yet written back count as dirty, not clean
    os.close(fd)
    held = np.load(path, mmap_mode="r")
    float(held.sum())  # the parent maps and reads it too
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_child, args=(path, held, send))
    child.start()
    before, after = receive.recv()
    child.join(timeout=30)
    assert child.exitcode == 0
    grown = {key: after[key] - before[key] for key in ("rss_mib", "pss_mib", "shared_clean_mib", "private_mib")}
    assert grown["rss_mib"] >= 0.9 * FILE_MIB
    assert grown["shared_clean_mib"] >= 0.9 * FILE_MIB  # the child's new pages are the parent's too
    assert grown["pss_mib"] <= 0.6 * grown["rss_mib"]  # split between the two processes
    assert grown["private_mib"] < 0.1 * FILE_MIB


def test_worker_rule_on_bentoml_command_lines() -> None:
    worker = ["/w/.venv/bin/python", "-m", "_bentoml_impl.worker.service", "serving.service:RecSys", "--fd", "9",
              "--service-name", "recsys", "--worker-id", "1"]  # fmt: skip
    arbiter = ["/w/.venv/bin/python", "/w/.venv/bin/bentoml", "serve", "serving.service:RecSys", "--port", "3000"]
    assert role(worker) == "worker" and role(arbiter) == "arbiter"
    assert role(["bash", "/w/scripts/serve.sh"]) == "other" and role([]) == "other"


def _row(role_name: str, rss: float, pss: float, private: float, dirty: float | None = None) -> dict[str, Any]:
    return {"role": role_name, "pid": 1, "rss_mib": rss, "pss_mib": pss, "private_mib": private,
            "private_dirty_mib": private if dirty is None else dirty, "shared_mib": rss - private}  # fmt: skip


def _section() -> dict[str, Any]:
    mapped = summarize(
        [
            _row("arbiter", 500.0, 370.0, 333.0),
            _row("worker", 1550.0, 1100.0, 1000.0, 600.0),
            _row("worker", 750.0, 300.0, 200.0, 600.0),
        ]
    )  # fmt: skip  (one worker took most of the warm-up)
    read = summarize([_row("arbiter", 500.0, 370.0, 333.0), _row("worker", 1100.0, 1000.0, 950.0),
                      _row("worker", 1100.0, 1000.0, 950.0)])  # fmt: skip
    comparison = compare(mapped, read, 2)
    assert comparison == {"workers": 2, "per_worker_rss_mib": {"mapped": 1150.0, "read": 1100.0},
                  "per_worker_private_dirty_mib": {"mapped": 600.0, "read": 950.0},
                  "total_pss_mib": {"mapped": 1770.0, "read": 2370.0}, "saving_mib": 600.0, "saving_ratio": 1.34,
                  "saving_per_extra_worker_mib": 350.0}  # fmt: skip
    return {"state_dir": "/s", "version": "v1", "workers": 2, "warm_users": 300, "mapped": mapped, "read": read,
            "mappable": {"files": 12, "bytes": 2**29, "mib": 512.0, "npz_files": 0, "npz_mib": 0.0},
            "comparison": comparison}  # fmt: skip


def _results(sections: dict[str, Any]) -> dict[str, Any]:
    machine = {"cpu_model": "cpu", "logical_cpus": 2, "usable_cpus": 2, "ram_gib": 8, "ram_available_gib_at_start": 4,
               "python": "3.11", "load_start": None, "versions": {k: "1" for k in ("faiss-cpu", "lightgbm", "torch",
               "lleaves", "llvmlite", "onnxruntime", "bentoml", "feast", "numpy")}}  # fmt: skip
    return {"command": "python -m bench.run --only memory", "started_at": "2026-01-01T00:00:00+00:00", "quick": True,
            "plan": {}, "machine": machine, "sections": sections, "durations": {}, "total_seconds": 1.0}  # fmt: skip


def _memory_text(sections: dict[str, Any]) -> str:
    return render(_results(sections)).split("## 5b. Memory")[1].split("\n## ")[0]


def test_report_renders_the_memory_section() -> None:
    summary = _section()
    assert summary["mapped"]["total_pss_mib"] == 1770.0 and summary["read"]["per_worker"]["private_mib"] == 950.0
    text = _memory_text({"memory": summary})
    assert "| memory-mapped (default) | 2 | 1,150.0 | 600.0 | 600.0 | 1,770.0 |" in text
    assert "| read into each worker (RECSYS_MEMORY_MAP=false) | 2 | 1,100.0 | 950.0 | 950.0 | 2,370.0 |" in text
    assert (
        "**600.0 MiB**" in text
        and "350.0 MiB of private dirty memory for every worker" in text
        and "512.0 MiB in 12 files" in text
    )


def test_report_renders_a_failed_or_skipped_memory_section() -> None:
    failed = _memory_text({"memory": {"error": "RuntimeError: bentoml serve exited (1)"}})
    assert "**Failed:** `RuntimeError: bentoml serve exited (1)`" in failed and "|" not in failed
    assert _memory_text({}).strip().endswith("Skipped.")
