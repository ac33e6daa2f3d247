#!/usr/bin/env bash
# Lint and format check (ruff, configured in pyproject.toml). Fails on any lint error or unformatted file.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
