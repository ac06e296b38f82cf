#!/usr/bin/env bash
# Serve the recommender on this machine: `bentoml serve serving.service:RecSys` on $RECSYS_HOST:$PORT (default
# 127.0.0.1:3000: reachable from this machine only, unless told otherwise), from the repo root, serving the
# champion of one namespace (RECSYS_NAMESPACE, default: the only one) under the state folder (RECSYS_STATE_DIR,
# default .state).
# BentoML's home (logs, metrics, model and bento stores) defaults to <state folder>/bentoml.
# Extra arguments go to `bentoml serve`, e.g. `scripts/serve.sh --development`.
set -euo pipefail
cd "$(dirname "$0")/.."

state_dir=$(realpath -m "${RECSYS_STATE_DIR:-.state}")
export RECSYS_STATE_DIR="$state_dir"
export BENTOML_HOME
BENTOML_HOME=$(realpath -m "${BENTOML_HOME:-$state_dir/bentoml}")
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"  # the text encoder ships with a package; never reach for the hub
port="${PORT:-3000}"
# one worker process per core (each holds the version in memory); a /reload call reaches one of them, the others
# switch within the watcher's poll interval
export RECSYS_SERVE_WORKERS="${RECSYS_SERVE_WORKERS:-$(nproc)}"
export BENTOML_CONFIG_OPTIONS="services.recsys.workers=$RECSYS_SERVE_WORKERS ${BENTOML_CONFIG_OPTIONS:-}"

host="${RECSYS_HOST:-127.0.0.1}"
namespace="${RECSYS_NAMESPACE:-}"
if [[ -n "$namespace" && ! -e "$state_dir/versions/$namespace/current" ]]; then
    echo "serve.sh: namespace '$namespace' has no published version under $state_dir/versions" >&2
    exit 1
fi
if ! compgen -G "$state_dir/versions/*/current" > /dev/null; then
    echo "serve.sh: no published version under $state_dir/versions (run the pipeline first: recsys pipeline)" >&2
    exit 1
fi

if [[ -n "${BENTOML:-}" ]]; then
    bentoml=$BENTOML
elif [[ -x .venv/bin/bentoml ]]; then
    bentoml=.venv/bin/bentoml
else
    bentoml=bentoml
fi

echo "serving namespace '${namespace:-the only one}' from $state_dir on http://$host:$port" \
    "($RECSYS_SERVE_WORKERS workers)" >&2
exec "$bentoml" serve serving.service:RecSys --host "$host" --port "$port" "$@"
