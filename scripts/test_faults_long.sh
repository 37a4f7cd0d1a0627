#!/usr/bin/env bash
# The fault suite's long cases (pytest marker `faults_long`): hundreds of SIGKILLs at random
# moments while kernels record and snapshot, while `nbexp gc` deletes, `nbexp push`
# uploads and `nbexp rm` removes experiments. They take minutes, so the default run
# (scripts/test.sh) skips them.
# NBEXP_FAULT_SEED=N repeats a run's schedule (each run prints its seed).
set -euo pipefail
cd "$(dirname "$0")/.."
NBEXP_FAULTS_LONG=1 .venv/bin/python -m pytest -q -p no:cacheprovider -m faults_long \
  tests/faults "$@"
