#!/usr/bin/env bash
# The main job on the demo catalog, served on localhost with a real request shown.
# - Nothing served yet: a first look (`--profile quick`: untuned, static text vectors, ~1.5 min on two cores) is
#   published and served, then the full pipeline runs behind the service and replaces it when it ends (the service
#   switches within RECSYS_RELOAD_INTERVAL_SECONDS). A version already served: it is served at once, and the full
#   pipeline re-runs behind it (its cached steps are reused; a new version is served only if it beats the champion).
# DEMO_SERVE=0: only the full pipeline, in the foreground, no service. DEMO_FULL=0: no full pipeline behind the service.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
state="${RECSYS_STATE_DIR:-.state}"
if [[ "${DEMO_SERVE:-1}" == 0 ]]; then
    exec .venv/bin/python -m flows.cli pipeline --dataset demo
fi

served=$(.venv/bin/python -c "
from models.settings import Settings; from models.recommender.versions import CURRENT, VersionStore
print(VersionStore(Settings().for_dataset('demo').versions_dir).pointed(CURRENT) or '')")
full=(.venv/bin/python -m flows.cli pipeline --dataset demo)
if [[ -z "$served" ]]; then
    echo "first look: the quick profile publishes a version to serve now; the full pipeline follows behind it"
    .venv/bin/python -m flows.cli pipeline --dataset demo --profile quick
    # the first look is a stand-in, not a champion the full version has to beat: the gate's figures are still logged
    full+=(--force)
else
    echo "serving the published version $(basename "$served"); the full pipeline re-runs behind it"
fi

port="${PORT:-3000}"
# The admin token guards /events, /items, /reload and the explorer's /explore (it shows users' histories): the demo
# makes one for this run unless RECSYS_ADMIN_TOKEN is set, and hands it to the explorer in its address.
export RECSYS_ADMIN_TOKEN="${RECSYS_ADMIN_TOKEN:-$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(18))')}"
bash scripts/serve.sh > "${RECSYS_STATE_DIR:-.state}/serve.log" 2>&1 &
server=$!
background=($server)
trap 'kill -- "${background[@]}" 2>/dev/null' EXIT INT TERM
echo "starting the service on http://127.0.0.1:$port (log: ${RECSYS_STATE_DIR:-.state}/serve.log) ..."
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
    kill -0 $server 2>/dev/null || { echo "the service stopped; see the log"; exit 1; }
    sleep 1
done
# the saved (validated) dataset's columns the example needs, not the whole dataset: seconds count on a first look
user=$(.venv/bin/python -c "
import pandas as pd; from models.settings import Settings
print(pd.read_parquet(Settings().dataset_dir('demo') / 'interactions.parquet', columns=['user_id'])['user_id'].iloc[-1])")
request="curl -s -X POST http://127.0.0.1:$port/recommend -H 'Content-Type: application/json' -d '{\"user_id\": \"$user\", \"k\": 5}'"
echo
echo "try it:  $request"
eval "$request" | .venv/bin/python -c "
import json, sys
import pandas as pd; from models.settings import Settings
answer = json.load(sys.stdin)
columns = ['item_id', 'title', 'category', 'price']
items = pd.read_parquet(Settings().dataset_dir('demo') / 'items.parquet', columns=columns).set_index('item_id')
print(json.dumps(answer, indent=2))
print(f'the list for $user, with titles (version {answer[\"version\"]}):')
for rank, item in enumerate(answer['items'], 1):
    row = items.loc[item['item_id']]
    print(f'  {rank}. {item[\"item_id\"]}  {row[\"title\"]}  ({row[\"category\"]}, {row[\"price\"]:.2f})  score {item[\"score\"]:.3f}')
" || echo "(the answer could not be shown with titles; the service keeps running)"
echo
echo "explorer (history, stage-1 candidates, re-ranking, rules, search; the address carries this run's admin token):"
echo "  http://127.0.0.1:$port/ui/?user=$user#token=$RECSYS_ADMIN_TOKEN"
echo "demo ready after $((SECONDS - started)) s; serving until Ctrl-C (UIs: make ui)"
if [[ "${DEMO_FULL:-1}" != 0 ]]; then
    log="$state/pipeline-full.log"
    echo "the full pipeline runs behind the service (log: $log; about 10 min on two cores) ..."
    set -m  # its own process group: Ctrl-C stops the pipeline's helpers (Prefect's server, step processes) too
    (
        if "${full[@]}" > "$log" 2>&1; then
            echo
            echo "the full pipeline finished (a new champion is served within ${RECSYS_RELOAD_INTERVAL_SECONDS:-10} s):"
            grep -E "^(=== pipeline|two-stage / best|version |release decision)" "$log" | sed 's/^/  /'
        else
            echo "the full pipeline failed (the service keeps serving what it served); see $log"
        fi
    ) &
    background+=(-$!)
    set +m
fi
wait $server
