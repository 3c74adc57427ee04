#!/usr/bin/env bash
# README command 1: set up, then stream the bundled real alerts through a local Kafka
# broker into Parquet (output/demo/) and the console, with local Spark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m fink_spark.testing.demo "$@"
