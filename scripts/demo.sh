#!/usr/bin/env bash
# The main job: the whole pipeline on the demo catalog, its summary, then the service on localhost with a real
# request shown. DEMO_SERVE=0 stops after the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
.venv/bin/python -m flows.cli pipeline --dataset demo
[[ "${DEMO_SERVE:-1}" == 0 ]] && exit 0

port="${PORT:-3000}"
# The admin token guards /events, /items, /reload and the explorer's /explore (it shows users' histories): the demo
# makes one for this run unless RECSYS_ADMIN_TOKEN is set, and hands it to the explorer in its address.
export RECSYS_ADMIN_TOKEN="${RECSYS_ADMIN_TOKEN:-$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(18))')}"
bash scripts/serve.sh > "${RECSYS_STATE_DIR:-.state}/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT INT TERM
echo "starting the service on http://127.0.0.1:$port (log: ${RECSYS_STATE_DIR:-.state}/serve.log) ..."
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
    kill -0 $server 2>/dev/null || { echo "the service stopped; see the log"; exit 1; }
    sleep 1
done
user=$(.venv/bin/python -c "
from models.settings import Settings; from models.data.tables import load_saved_dataset
print(load_saved_dataset(Settings().dataset_dir('demo')).interactions['user_id'].iloc[-1])")
request="curl -s -X POST http://127.0.0.1:$port/recommend -H 'Content-Type: application/json' -d '{\"user_id\": \"$user\", \"k\": 5}'"
echo
echo "try it:  $request"
eval "$request" | .venv/bin/python -c "
import json, sys
from models.settings import Settings; from models.data.tables import load_saved_dataset
answer = json.load(sys.stdin)
items = load_saved_dataset(Settings().dataset_dir('demo')).items.set_index('item_id')
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
wait $server
