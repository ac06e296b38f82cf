"""Process set-up: a pipeline run gives Prefect's temporary server time to create its database on a busy machine,
and keeps what the user set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flows.runtime import EPHEMERAL_STARTUP_SECONDS

READ_TIMEOUT = """
from models.settings import Settings
from flows.runtime import prepare_environment
prepare_environment(Settings(state_dir={state!r}))
from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
print(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
"""


def _startup_timeout(tmp_path: Path, extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RECSYS_"))} | extra
    script = READ_TIMEOUT.format(state=str(tmp_path / "state"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_temporary_server_gets_longer_than_prefects_20_s_default_unless_set(tmp_path: Path) -> None:
    assert float(_startup_timeout(tmp_path, {})) == EPHEMERAL_STARTUP_SECONDS > 20
    assert float(_startup_timeout(tmp_path, {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "45"})) == 45
