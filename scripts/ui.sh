#!/usr/bin/env bash
# Prefect UI (http://127.0.0.1:4200) and MLflow UI (http://127.0.0.1:5000) over the state folder the pipeline writes
# (RECSYS_STATE_DIR, default .state): the demo's flow runs, MLflow runs and registered models are there.
set -euo pipefail
cd "$(dirname "$0")/.."
state=$(realpath -m "${RECSYS_STATE_DIR:-.state}")
mkdir -p "$state/prefect" "$state/mlflow/artifacts"
export PREFECT_HOME="$state/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false
.venv/bin/prefect server start --host 127.0.0.1 --port "${PREFECT_PORT:-4200}" &
prefect_pid=$!
.venv/bin/mlflow server --backend-store-uri "sqlite:///$state/mlflow/mlflow.db" \
    --default-artifact-root "$state/mlflow/artifacts" --host 127.0.0.1 --port "${MLFLOW_PORT:-5000}" &
mlflow_pid=$!
trap 'kill $prefect_pid $mlflow_pid 2>/dev/null' EXIT INT TERM
echo "Prefect UI: http://127.0.0.1:${PREFECT_PORT:-4200}   MLflow UI: http://127.0.0.1:${MLFLOW_PORT:-5000}   (Ctrl-C stops both)"
# MLflow 3.17's UI opens an experiment in GenAI mode unless the address asks for model training: these links do.
.venv/bin/python -c "
import sys; from pathlib import Path; from flows.tracking import experiment_links
for link in experiment_links(Path(sys.argv[1]), sys.argv[2]): print('  ' + link)
" "$state/mlflow" "http://127.0.0.1:${MLFLOW_PORT:-5000}" || true
wait
