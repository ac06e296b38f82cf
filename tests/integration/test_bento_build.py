"""``bentoml build -f serving/bentofile.yaml``: the bento holds the service's code and, as the model
``recsys-state``, the published version with the Feast files it reads; served from the store, it serves that
version. BentoML's home is a temporary folder outside the build context (the repo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bentoml._internal.models import ModelStore

from flows.package import export_state_model
from models.recommender.versions import STATE_MODEL
from models.settings import PROJECT_ROOT
from tests.integration.processes import stop, wait_until_ready
from tests.serving.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENTOML = Path(sys.executable).with_name("bentoml")


# `bentoml build` looks for `uv` even when it does not lock (the bentofile says lock_packages: false) and, when
# there is none on PATH, pip-installs it into the running environment. This stand-in stops that, and fails the build
# should BentoML ever run it.
UV_STAND_IN = """#!/bin/sh
echo "uv $* called: serving/bentofile.yaml uses the project's lock and must not need uv" >&2
exit 1
"""


def bentoml(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    result = subprocess.run([str(BENTOML), *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    assert result.returncode == 0, f"bentoml {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_bento_carries_and_serves_the_published_version(version, tmp_path):
    home = tmp_path / "bentoml-home"  # outside the build context (the repo): inside, the build copies itself
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "uv").write_text(UV_STAND_IN)
    (tools / "uv").chmod(0o755)
    path = f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1"}
    model = export_state_model(version.settings, model_store=ModelStore(home / "models"))
    model_path = Path(model.path)
    assert (model_path / "versions" / "demo" / "current" / "manifest.json").is_file()

    tag = bentoml(env, "build", "-f", "serving/bentofile.yaml", "-o", "tag", str(PROJECT_ROOT)).strip().splitlines()[-1]
    tag = tag.removeprefix("__tag__:")
    info = json.loads(bentoml(env, "get", tag, "-o", "json"))
    assert [m["tag"] for m in info["models"]] == [f"{STATE_MODEL}:{version.version.lower()}"]
    src = home / "bentos" / tag.replace(":", "/") / "src"
    assert (src / "serving" / "service.py").is_file() and (src / "feature_repo" / "definitions.py").is_file()
    assert not (src / ".state").exists() and not (src / "tests").exists() and not (src / ".venv").exists()

    port = free_port()
    log = tmp_path / "serve-bento.log"
    # no RECSYS_STATE_DIR: the service must find the state the bento carries by itself
    serve_env = {**{k: v for k, v in env.items() if k != "RECSYS_STATE_DIR"}, "RECSYS_RELOAD_INTERVAL_SECONDS": "3600"}
    with open(log, "wb") as out:
        process = subprocess.Popen([str(BENTOML), "serve", tag, "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=tmp_path, env=serve_env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        client = wait_until_ready(process, f"http://127.0.0.1:{port}", log)
        with client:
            assert client.version() == {
                "namespace": "demo",
                "version": version.version,
                "challenger": None,
                "last_reload_error": None,
            }
            answer = client.recommend(user_id="no-such-user", k=3)
            assert answer["version"] == version.version and len(answer["items"]) == 3
    finally:
        stop(process)
