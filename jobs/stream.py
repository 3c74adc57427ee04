"""Stream Fink topics into checkpointed Parquet, a quarantine and the console.

    ./spark-submit.sh jobs/stream.py --config conf/fink_ztf.yaml [--available-now]
"""

from __future__ import annotations

import argparse
import logging

from fink_spark.cli import run_cli
from fink_spark.config import load_config
from fink_spark.session import build_session
from fink_spark.streaming import prepare_stream, run_stream


def main() -> None:
    parser = argparse.ArgumentParser(description="Stream Fink alerts into Parquet with Spark.")
    parser.add_argument("--config", required=True, help="YAML configuration file (see conf/)")
    parser.add_argument("--available-now", action="store_true", help="consume what is there, then stop")
    parser.add_argument("--servers", help="Kafka bootstrap servers, instead of the file's kafka.servers")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    config = load_config(args.config)
    config = config.with_overrides(available_now=args.available_now, servers=args.servers)
    plan = prepare_stream(config)
    spark = build_session("fink-spark-stream")
    try:
        run_stream(spark, plan)
    finally:
        spark.stop()


if __name__ == "__main__":
    run_cli(main)
