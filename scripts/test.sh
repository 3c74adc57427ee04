#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (real Kafka broker, real Spark).
# --fast: only the tests that need neither the broker nor a subprocess.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${1:-}" == "--fast" ]]; then  # what needs neither the broker nor another process: a check before a commit
    shift
    exec .venv/bin/python -m pytest -m "not broker and not subprocess" "$@"
fi
exec .venv/bin/python -m pytest "$@"
