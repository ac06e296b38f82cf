"""What the numbers were measured on: CPU, cores, RAM, library versions, load, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.common import load_reading
from models.settings import PROJECT_ROOT

PACKAGES = ("faiss-cpu", "lightgbm", "torch", "numpy", "sentence-transformers", "onnxruntime", "lleaves", "llvmlite",
            "bentoml", "feast", "uvicorn")  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo() -> dict[str, float]:
    values: dict[str, float] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("MemTotal", "MemAvailable"):
                values[name] = round(int(rest.split()[0]) / 1024 / 1024, 1)  # kB → GiB
    except OSError:
        pass
    return values


def package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "--short", "HEAD"),
            "dirty_files": len(git("status", "--porcelain").splitlines()),
        }
    except (OSError, subprocess.SubprocessError):
        return {}


def describe_machine() -> dict[str, Any]:
    mem = _meminfo()
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": mem.get("MemTotal"),
        "ram_available_gib_at_start": mem.get("MemAvailable"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {p: package_version(p) for p in PACKAGES},
        "git": _git(),
        "load_start": load_reading(),
    }
