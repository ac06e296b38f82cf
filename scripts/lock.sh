#!/usr/bin/env bash
# Compile the two locks from pyproject.toml for Python 3.11 on Linux x86-64. Needs `uv` (pip install uv; UV=path).
#   requirements.lock      the runtime dependencies only: what the bento (serving/bentofile.yaml) and a production
#                          install take;
#   requirements-dev.lock  runtime + the `dev` and `bench` extras: what `make setup` installs. It is compiled with
#                          requirements.lock as constraints, so every package the two share has the same version.
# Both leave out the CUDA packages PyPI's torch depends on (nvidia-*, cuda-*, triton): `pip install torch==2.13.0`
# then takes the CPU build. An existing lock is uv's preference: a re-run changes a version only when it must.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-uv}
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --quiet)
# first pass: find the GPU-only packages the fullest resolution pulls in
gpu=$("$uv" pip compile pyproject.toml "${common[@]}" --extra dev --extra bench \
    | grep -oE '^(nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+|triton)==' | tr -d '=' | sort -u)
exclude=()
for package in $gpu; do exclude+=(--no-emit-package "$package"); done
"$uv" pip compile pyproject.toml "${common[@]}" "${exclude[@]}" -o requirements.lock
"$uv" pip compile pyproject.toml "${common[@]}" --extra dev --extra bench -c requirements.lock "${exclude[@]}" \
    -o requirements-dev.lock
# every shared pin would name `-c requirements.lock` as a source: drop that, and fold a lone remaining source
awk 'function flush() { if (n == 1) print "    # via " substr(held[1], 9); else if (n > 1) { print "    # via"
                                  for (i = 1; i <= n; i++) print held[i] }; via = 0; n = 0 }
     /^    #   -c requirements\.lock$/ { next }
     via && /^    #   / { held[++n] = $0; next }
     via { flush() }
     /^    # via$/ { via = 1; next }
     { print }
     END { if (via) flush() }' requirements-dev.lock > requirements-dev.lock.tmp
mv requirements-dev.lock.tmp requirements-dev.lock
echo "requirements.lock and requirements-dev.lock written; left out: ${gpu//$'\n'/ }"
