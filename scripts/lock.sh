#!/usr/bin/env bash
# Compile requirements.lock from pyproject.toml for Python 3.11 on Linux x86-64, without the CUDA wheels that
# PyPI's torch depends on: `pip install torch==2.13.0` then takes the CPU build. Needs `uv` (pip install uv).
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-uv}
common=(--extra dev --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header)
# first pass: find the GPU-only packages the resolution pulls in
gpu=$("$uv" pip compile pyproject.toml "${common[@]}" | grep -oE '^(nvidia-[a-z0-9-]+|triton)==' | tr -d '=' | sort -u)
exclude=()
for package in $gpu; do exclude+=(--no-emit-package "$package"); done
"$uv" pip compile pyproject.toml "${common[@]}" "${exclude[@]}" -o requirements.lock
echo "requirements.lock written; left out: ${gpu//$'\n'/ }"
