"""Reprocess saved alerts (Avro, gzipped Avro, Parquet, Kafka offset ranges) into the live job's layout.

    ./spark-submit.sh jobs/reprocess.py --config conf/reprocess_ztf.yaml --input alerts/2026-03-22/ [--count-only]

The same command as `fink-spark reprocess`, for spark-submit on a cluster.
"""

from __future__ import annotations

import argparse

from fink_spark.cli import run_cli
from fink_spark.cli.commands import REPROCESS_HELP, add_reprocess_arguments, reprocess_command

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=REPROCESS_HELP)
    add_reprocess_arguments(parser)
    run_cli(lambda: reprocess_command(parser.parse_args()))
