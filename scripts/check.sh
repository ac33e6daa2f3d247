#!/usr/bin/env bash
# Lint, format and type check (ruff and mypy, configured in pyproject.toml). Fails on any lint error,
# unformatted file or type error.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python scripts/typecheck.py  # mypy on the gais_pipe package, as installed (see the script)
