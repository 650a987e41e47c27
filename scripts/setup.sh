#!/usr/bin/env bash
# Install PAROMA-MED into .venv from nothing, pinned by constraints.txt.
#   scripts/setup.sh         the package and its commands
#   scripts/setup.sh --dev   also the test tools: pytest, ruff, mypy, the npm
#                            packages (solc, anvil, the JavaScript VC library) and
#                            Debian's chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip>=24"
if [ "${1:-}" = "--dev" ]; then
    .venv/bin/pip install --quiet -c constraints.txt -e ".[dev]"
    npm ci --no-audit --no-fund --loglevel=error
    if ! command -v chromium >/dev/null 2>&1; then
        if [ "$(id -u)" = "0" ]; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        else
            echo "chromium is missing: install Debian's chromium package for the browser tests" >&2
            exit 2
        fi
    fi
else
    .venv/bin/pip install --quiet -c constraints.txt -e .
fi
