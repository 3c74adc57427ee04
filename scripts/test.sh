#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (real Kafka broker, real Spark).
# --fast: only the tests that need neither the broker nor a subprocess.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The shared-catalog test runs a PostgreSQL server (Debian's package; fink_spark.testing.local_postgres).
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[test] installing PostgreSQL (apt-get install postgresql)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null
    else
        echo "[test] PostgreSQL is not installed: the shared-catalog test will fail (install the postgresql package)" >&2
    fi
fi
if [[ "${1:-}" == "--fast" ]]; then  # what needs neither the broker nor another process: a check before a commit
    shift
    exec .venv/bin/python -m pytest -m "not broker and not subprocess" "$@"
fi
exec .venv/bin/python -m pytest "$@"
