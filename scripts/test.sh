#!/usr/bin/env bash
# Set up, check lint and format, then run the whole test suite (offline, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check.sh
exec .venv/bin/python -m pytest -q "$@"
