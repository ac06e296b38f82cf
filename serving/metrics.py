"""Prometheus metrics of the service, on BentoML's ``/metrics`` beside its own request metrics.

``prometheus_client`` is imported when the first worker builds its metrics, not when this module is imported:
BentoML sets the multiprocess folder (PROMETHEUS_MULTIPROC_DIR) in each worker before the service starts, and a
client imported earlier would count in single-process mode, invisible to ``/metrics``.
"""

from __future__ import annotations

import functools
from typing import Any

from models.recommender.request import Result
from serving.runtime import Metrics

STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@functools.cache
def _collectors() -> dict[str, Any]:
    """One set per process (a second service instance in the same process, as in tests, shares it)."""
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "requests": Counter("recsys_requests", "Answered lists", ["endpoint", "variant"]),
        "latency": Histogram(
            "recsys_request_seconds",
            "Time to answer a list, in the runtime",
            ["endpoint", "variant"],
            buckets=STAGE_BUCKETS,
        ),  # fmt: skip
        "stages": Histogram(
            "recsys_stage_seconds",
            "Time per stage of a list (user features, retrieval, ranking, rules)",
            ["stage", "variant"],
            buckets=STAGE_BUCKETS,
        ),  # fmt: skip
        "fallback": Counter("recsys_fallback", "Lists for unknown users (popular and fresh)", ["endpoint", "variant"]),
        "degraded": Counter(
            "recsys_degraded", "Lists served without user features: the online store failed", ["endpoint", "variant"]
        ),  # fmt: skip
        "errors": Counter(
            "recsys_errors", "Requests that failed with a server error (logged with traceback)", ["endpoint"]
        ),  # fmt: skip
        "shadow_dropped": Counter("recsys_shadow_dropped", "Shadow scorings skipped: the shadow queue was full"),
        "version": Gauge(
            "recsys_served_version",
            "1 for the version each role serves",
            ["role", "version"],
            multiprocess_mode="livemax",
        ),  # fmt: skip
    }


class PrometheusMetrics(Metrics):
    def __init__(self) -> None:
        self.c = _collectors()
        self._versions: dict[str, str] = {}

    def served(self, endpoint: str, variant: str, result: Result, seconds: float) -> None:
        self.c["requests"].labels(endpoint, variant).inc()
        self.c["latency"].labels(endpoint, variant).observe(seconds)
        for stage, milliseconds in result.timings_ms.items():
            self.c["stages"].labels(stage, variant).observe(milliseconds / 1000)
        if result.fallback:
            self.c["fallback"].labels(endpoint, variant).inc()
        if result.degraded:
            self.c["degraded"].labels(endpoint, variant).inc()

    def failed(self, endpoint: str) -> None:
        self.c["errors"].labels(endpoint).inc()

    def shadow_dropped(self) -> None:
        self.c["shadow_dropped"].inc()

    def version_loaded(self, role: str, version: str | None) -> None:
        old = self._versions.pop(role, None)
        if old is not None:
            self.c["version"].labels(role, old).set(0)
        if version is not None:
            self.c["version"].labels(role, version).set(1)
            self._versions[role] = version
