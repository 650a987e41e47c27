#!/usr/bin/env bash
# Install everything from nothing, then run every check CI runs: lint, format,
# types, and the whole test suite (slow, browser, anvil and Node.js tests included).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
