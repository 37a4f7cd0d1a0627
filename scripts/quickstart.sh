#!/usr/bin/env bash
# Set up, then run the quickstart notebook headless and show what it recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/run_quickstart.py "$@"
