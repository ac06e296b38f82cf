"""Section 5b: resident memory of the ``bentoml serve`` worker processes, version memory-mapped vs read per worker.

The service memory-maps a version's FAISS indexes, item-item CSR tables, iALS factors and text vectors
(``RECSYS_MEMORY_MAP=true``, the default): the pages live once in the page cache and every worker maps the same ones.
Baseline in the same run: ``RECSYS_MEMORY_MAP=false``, each worker reads its own copy. Each server is warmed with
``bench.loadgen`` over a few hundred known users (so every worker has touched the arrays a request needs), then
every process of its tree is read from ``/proc/<pid>/smaps_rollup``. RSS counts a shared page in full in every
process that maps it; PSS splits it among them, so the sum of PSS over the tree is what the service really costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any

from bench.common import log, ratio
from bench.e2e import Server, load_run, running_server, write_users
from serving.state import champion_pointer

ROLLUP_FIELDS = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")
MAPPABLE_PATTERNS = ("*.faiss", "*.npy")
MODES = {"mapped": "true", "read": "false"}
"""Label of each measured server and its ``RECSYS_MEMORY_MAP``."""


def parse_rollup(text: str) -> dict[str, int]:
    """The ``ROLLUP_FIELDS`` of an ``smaps_rollup`` text, in kB (the kernel's unit); a missing field is an error, so a
    format change fails loudly instead of reporting zeros."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key in ROLLUP_FIELDS:
            number, unit = rest.split()
            if unit != "kB":
                raise ValueError(f"smaps_rollup: unexpected unit {unit!r} in {line!r}")
            values[key] = int(number)
    missing = [key for key in ROLLUP_FIELDS if key not in values]
    if missing:
        raise ValueError(f"smaps_rollup: missing {', '.join(missing)}")
    return values


def _mib(kb: float) -> float:
    return round(kb / 1024, 1)


def process_memory(pid: int) -> dict[str, Any]:
    """RSS, PSS, shared and private memory (MiB) and the command line of a live process; ``ProcessLookupError`` when
    it has gone (or is a zombie, whose memory is already released)."""
    proc = Path("/proc") / str(pid)
    try:
        rollup = (proc / "smaps_rollup").read_text()
        argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError) as error:
        raise ProcessLookupError(f"process {pid} is gone") from error
    if not rollup.strip():  # a zombie: exited, not yet reaped
        raise ProcessLookupError(f"process {pid} has exited")
    kb = parse_rollup(rollup)
    out: dict[str, Any] = {"pid": pid, "cmdline": shlex.join(argv), "argv": argv}
    out.update({f"{key.lower()}_mib": _mib(value) for key, value in kb.items()})
    out["shared_mib"] = _mib(kb["Shared_Clean"] + kb["Shared_Dirty"])
    out["private_mib"] = _mib(kb["Private_Clean"] + kb["Private_Dirty"])
    return out


def role(argv: list[str]) -> str:
    """``worker`` for a BentoML worker process (``python -m _bentoml_impl.worker.service ... --worker-id N``; legacy
    services run ``bentoml_cli.worker.*``), ``arbiter`` for ``bentoml serve`` itself (it starts and watches the
    workers), ``other`` for anything else in the tree (e.g. the shell of scripts/serve.sh before it execs)."""
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    if "worker" in module.split(".") or "--worker-id" in argv:
        return "worker"
    if "serve" in argv and any(Path(a).name == "bentoml" for a in argv):
        return "arbiter"
    return "other"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (NaN once it has gone): shows which workers served the warm-up."""
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 1) if values else float("nan")


def summarize(processes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-worker means and the totals over the process tree of ``process_memory`` rows that carry a ``role``."""
    workers = [p for p in processes if p["role"] == "worker"]
    return {
        "workers": len(workers),
        "per_worker": {
            key: _mean([w[key] for w in workers])
            for key in ("rss_mib", "pss_mib", "private_mib", "private_dirty_mib", "shared_mib")
        },
        "workers_pss_mib": round(sum(w["pss_mib"] for w in workers), 1),
        "total_rss_mib": round(sum(p["rss_mib"] for p in processes), 1),
        "total_pss_mib": round(sum(p["pss_mib"] for p in processes), 1),
        "processes": processes,
    }


def server_memory(server: Server) -> dict[str, Any]:
    """``process_memory`` of every process of a running server, each with its ``role``, and ``summarize``'s totals."""
    processes = []
    for pid in sorted(server.pids()):
        try:
            row = process_memory(pid)
        except ProcessLookupError:
            continue
        processes.append({"role": role(row.pop("argv")), **row})
    return summarize(processes)


def mappable_files(version_dir: Path) -> dict[str, Any]:
    """Count and size of the version's files the service maps (``stage1/**/*.faiss`` and ``*.npy``); versions
    written before the CSR tables became ``.npy`` keep them as ``.npz``, read into memory either way."""
    stage1 = version_dir / "stage1"
    files = sorted({p for pattern in MAPPABLE_PATTERNS for p in stage1.rglob(pattern) if p.is_file()})
    npz = [p for p in stage1.rglob("*.npz") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    return {"files": len(files), "bytes": total, "mib": _mib(total / 1024),
            "npz_files": len(npz), "npz_mib": _mib(sum(p.stat().st_size for p in npz) / 1024)}  # fmt: skip


def measure(
    state_dir: Path, out_dir: Path, label: str, workers: int, users_file: Path, warmup: float, duration: float
) -> dict[str, Any]:
    """One server with ``RECSYS_MEMORY_MAP`` set for ``label``: warmed by the load generator, then measured."""
    env = {"RECSYS_MEMORY_MAP": MODES[label]}
    with running_server(state_dir, out_dir / label, workers, f"memory ({label})", env=env) as server:
        before = {pid: cpu_seconds(pid) for pid in server.pids()}
        log(f"memory ({label}): warming, concurrency {workers} for {duration:.0f} s after {warmup:.0f} s warm-up")
        warm = load_run(server, users_file, out_dir / label / "loadgen.json", workers, warmup, duration)
        memory = server_memory(server)
        for row in memory["processes"]:
            row["warm_cpu_s"] = round(cpu_seconds(row["pid"]) - before.get(row["pid"], float("nan")), 2)
        memory["server_ready_seconds"] = round(server.ready_seconds, 1)
    memory["warm"] = {key: warm[key] for key in ("requests", "errors", "rps", "duration_s")}
    idle = [row["pid"] for row in memory["processes"] if row["role"] == "worker" and not row["warm_cpu_s"] > 0.1]
    if idle:
        log(f"memory ({label}): workers {idle} took (almost) no CPU during the warm-up: their mapped pages are cold")
    return memory


def compare(mapped: dict[str, Any], read: dict[str, Any], workers: int) -> dict[str, Any]:
    """Mapped vs read per worker and for the whole tree. One more worker costs its private dirty memory (its heap,
    and in the read server its copy of the version): mapped file pages that only one worker has touched yet count
    as that worker's private *clean* memory, though they sit in the page cache once for every process, so the
    saving per extra worker is the difference of private dirty memory."""
    private = {"mapped": mapped["per_worker"]["private_dirty_mib"], "read": read["per_worker"]["private_dirty_mib"]}
    pss = {"mapped": mapped["total_pss_mib"], "read": read["total_pss_mib"]}
    return {
        "workers": workers,
        "per_worker_rss_mib": {"mapped": mapped["per_worker"]["rss_mib"], "read": read["per_worker"]["rss_mib"]},
        "per_worker_private_dirty_mib": private,
        "total_pss_mib": pss,
        "saving_mib": round(pss["read"] - pss["mapped"], 1),
        "saving_ratio": ratio(pss["read"], pss["mapped"]),
        "saving_per_extra_worker_mib": round(private["read"] - private["mapped"], 1),
    }


def run_memory(
    state_dir: Path, out_dir: Path, workers: int = 2, warm_users: int = 300, warmup: float = 2.0, duration: float = 10.0
) -> dict[str, Any]:
    """Both servers one after the other (never two at once), with ``warm_users`` known users cycled by the load
    generator at concurrency ``workers``; returns a JSON-able dict."""
    version = champion_pointer(state_dir).resolve()
    _, users_file = write_users(state_dir, out_dir, warm_users)
    out: dict[str, Any] = {"state_dir": str(state_dir), "version": version.name, "workers": workers,
                           "warm_users": warm_users, "mappable": mappable_files(version)}  # fmt: skip
    for label in MODES:
        out[label] = measure(state_dir, out_dir, label, workers, users_file, warmup, duration)
    out["comparison"] = compare(out["mapped"], out["read"], workers)
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A short human summary of ``run_memory``'s result."""
    lines = []
    for label in MODES:
        r = result[label]
        w = r["per_worker"]
        lines.append(f"memory ({label}): {r['workers']} workers, per worker RSS {w['rss_mib']} MiB, PSS {w['pss_mib']} "
                     f"MiB, private {w['private_mib']} MiB (dirty {w['private_dirty_mib']}); PSS of the service "
                     f"{r['total_pss_mib']} MiB")  # fmt: skip
    c, m = result["comparison"], result["mappable"]
    lines.append(f"memory: mapping saves {c['saving_mib']} MiB of PSS (reading takes {c['saving_ratio']}× as much) and "
                 f"{c['saving_per_extra_worker_mib']} MiB per extra worker; mappable files {m['mib']} MiB "
                 f"({m['files']} files; {m['npz_mib']} MiB of .npz read into memory either way)")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.memory --state DIR [--workers 2] [--out DIR]``: the section alone, ``memory.json`` in the
    out folder."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--state", type=Path, required=True, help="a state folder with a published version")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="default <state>/bench/memory")
    parser.add_argument("--users", type=int, default=300, help="known users the warm-up cycles over")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of warm-up load after 2 s unrecorded")
    args = parser.parse_args(argv)
    state_dir = args.state.resolve()
    out_dir = (args.out or state_dir / "bench" / "memory").resolve()
    result = run_memory(state_dir, out_dir, args.workers, args.users, duration=args.duration)
    (out_dir / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
    for line in summary_lines(result):
        log(line)
    log(f"memory: {out_dir / 'memory.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
