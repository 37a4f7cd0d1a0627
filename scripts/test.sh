#!/usr/bin/env bash
# Set up, then run every test, the linters and the type checker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check nbexp tests bench scripts
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
