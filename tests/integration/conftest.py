"""Integration tests run real servers on the version the session's pipeline run published; they share the serving
tests' fixtures (the published version, its item table, users with online features)."""

from __future__ import annotations

from tests.serving.conftest import items, known_users, version  # noqa: F401  (fixtures)
