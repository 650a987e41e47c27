#!/usr/bin/env bash
# Install PAROMA-MED from nothing and run the main job: a whole federation of
# hospitals on this machine, ending in a report (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
.venv/bin/paroma-sim run "$@"
