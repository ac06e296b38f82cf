#!/usr/bin/env bash
# The main job on the demo catalog, served on localhost with a real request shown.
# - Nothing served yet: a first look (`--profile quick`: untuned, static text vectors, ~1.5 min on two cores) is
#   published and served, then the full pipeline runs behind the service and replaces it when it ends (a first look
#   is a stand-in, not a champion to beat; the service switches within RECSYS_RELOAD_INTERVAL_SECONDS).
# - A version already served: it is served at once, and the full pipeline re-runs behind it (its finished steps are
#   reused; a new version replaces a first look, or a champion it beats).
# DEMO_SERVE=0: only the full pipeline, in the foreground, no service. DEMO_FULL=0: no full pipeline behind the service
# (a first look is still built when nothing is served).
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
if [[ -z "$served" ]]; then
    echo "first look: the quick profile publishes a version to serve now; the full pipeline follows behind it"
    .venv/bin/python -m flows.cli pipeline --dataset demo --profile quick
else
    echo "serving the published version $(basename "$served"); the full pipeline re-runs behind it"
fi

server=""
pipeline=""
# stop what this script started: the service, and the pipeline behind it with its helpers (its process group)
cleanup() {
    [[ -n "$pipeline" ]] && kill -0 "$pipeline" 2>/dev/null && kill -- "-$pipeline" 2>/dev/null
    [[ -n "$server" ]] && kill "$server" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

port="${PORT:-3000}"
# The admin token guards /events, /items, /reload and the explorer's /explore (it shows users' histories): the demo
# makes one for this run unless RECSYS_ADMIN_TOKEN is set, and hands it to the explorer in its address.
export RECSYS_ADMIN_TOKEN="${RECSYS_ADMIN_TOKEN:-$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(18))')}"
bash scripts/serve.sh > "${RECSYS_STATE_DIR:-.state}/serve.log" 2>&1 &
server=$!
echo "starting the service on http://127.0.0.1:$port (log: ${RECSYS_STATE_DIR:-.state}/serve.log) ..."
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
    kill -0 $server 2>/dev/null || { echo "the service stopped; see the log"; exit 1; }
    sleep 1
done
# The example reads the saved (validated) dataset's columns it shows, not the whole dataset: seconds count on a first
# look. Single-threaded: a short script that exits right after a threaded Parquet read can abort in Arrow's thread
# pool teardown ("terminate called without an active exception", apache/arrow#34314; seen here once in a test).
user=$(.venv/bin/python -c "
import pyarrow.parquet as pq; from models.settings import Settings
path = Settings().dataset_dir('demo') / 'interactions.parquet'
print(pq.read_table(path, columns=['user_id'], use_threads=False).column('user_id')[-1].as_py())") || {
    user="new-visitor"; echo "(no example user could be read from the dataset: a new visitor's list instead)"; }
request="curl -s -X POST http://127.0.0.1:$port/recommend -H 'Content-Type: application/json' -d '{\"user_id\": \"$user\", \"k\": 5}'"
echo
echo "try it:  $request"
eval "$request" | .venv/bin/python -c "
import json, sys
import pyarrow.parquet as pq; from models.settings import Settings
answer = json.load(sys.stdin)
path, columns = Settings().dataset_dir('demo') / 'items.parquet', ['item_id', 'title', 'category', 'price']
items = pq.read_table(path, columns=columns, use_threads=False).to_pandas().set_index('item_id')
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
    echo "the full pipeline runs behind the service (log: $log; about 12 minutes on two cores) ..."
    set -m  # its own process group: Ctrl-C stops the pipeline's helpers (Prefect's server, step processes) too
    (
        if .venv/bin/python -m flows.cli pipeline --dataset demo < /dev/null > "$log" 2>&1; then
            echo
            echo "the full pipeline finished (a new champion is served within ${RECSYS_RELOAD_INTERVAL_SECONDS:-10} s):"
            grep -E "^(=== pipeline|two-stage / best|version |release decision)" "$log" | sed 's/^/  /'
        else
            echo "the full pipeline failed (the service keeps serving what it served); see $log"
        fi
    ) < /dev/null &
    pipeline=$!
    set +m
fi
wait $server
