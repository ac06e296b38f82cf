"""``scripts/serve.sh`` (for ``make serve``): what it runs, from where, with which BentoML home; ``bentoml`` is
replaced by a stub that prints what it was given (the real server is started by the integration tests)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from models.settings import PROJECT_ROOT

SERVE = PROJECT_ROOT / "scripts" / "serve.sh"
STUB = """#!/usr/bin/env bash
printf '%s\\n' "PWD=$PWD" "BENTOML_HOME=$BENTOML_HOME" "RECSYS_STATE_DIR=$RECSYS_STATE_DIR" \
    "HF_HUB_OFFLINE=$HF_HUB_OFFLINE" "ARGS=$*"
"""


@pytest.fixture
def stub(tmp_path: Path) -> Path:
    path = tmp_path / "bentoml-stub"
    path.write_text(STUB)
    path.chmod(0o755)
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state folder with a namespace's ``current`` pointer (the script checks there is something to serve)."""
    versions = tmp_path / "state" / "versions" / "demo"
    (versions / "v1").mkdir(parents=True)
    (versions / "current").symlink_to("v1")
    return tmp_path / "state"


def run(stub: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "BENTOML")) and k != "PORT"}
    return subprocess.run(["bash", str(SERVE), *args], cwd=cwd, env={**clean, "BENTOML": str(stub), **env},
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def printed(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_defaults_port_3000_on_localhost_from_the_repo_root(stub, state, tmp_path):
    out = printed(run(stub, tmp_path, RECSYS_STATE_DIR=str(state)))
    assert out["ARGS"] == "serve serving.service:RecSys --host 127.0.0.1 --port 3000"
    assert Path(out["PWD"]) == PROJECT_ROOT
    assert Path(out["BENTOML_HOME"]) == state / "bentoml"
    assert Path(out["RECSYS_STATE_DIR"]) == state
    assert out["HF_HUB_OFFLINE"] == "1"


def test_port_home_and_extra_arguments(stub, state, tmp_path):
    home = tmp_path / "elsewhere"
    result = run(stub, tmp_path, "--development", RECSYS_STATE_DIR=str(state), PORT="4321", BENTOML_HOME=str(home))
    out = printed(result)
    assert out["ARGS"] == "serve serving.service:RecSys --host 127.0.0.1 --port 4321 --development"
    assert Path(out["BENTOML_HOME"]) == home


def test_relative_state_folder_is_taken_from_the_repo_root(stub, tmp_path):
    result = run(stub, tmp_path)  # no RECSYS_STATE_DIR: .state under the repo root
    default = PROJECT_ROOT / ".state"
    if any((default / "versions").glob("*/current")):  # a developer's machine with a published version
        out = printed(result)
        assert Path(out["BENTOML_HOME"]) == default / "bentoml" and Path(out["RECSYS_STATE_DIR"]) == default
    else:
        assert result.returncode == 1 and str(default / "versions") in result.stderr
        assert not result.stdout  # bentoml was not started


def test_nothing_published_is_a_clear_error(stub, tmp_path):
    result = run(stub, tmp_path, RECSYS_STATE_DIR=str(tmp_path / "empty"))
    assert result.returncode == 1
    assert "no published version" in result.stderr and not result.stdout


def test_the_host_and_the_namespace_come_from_the_settings(stub, state, tmp_path):
    out = printed(run(stub, tmp_path, RECSYS_STATE_DIR=str(state), RECSYS_HOST="0.0.0.0", RECSYS_NAMESPACE="demo"))
    assert out["ARGS"] == "serve serving.service:RecSys --host 0.0.0.0 --port 3000"
    missing = run(stub, tmp_path, RECSYS_STATE_DIR=str(state), RECSYS_NAMESPACE="shop")
    assert missing.returncode == 1 and "namespace 'shop' has no published version" in missing.stderr
