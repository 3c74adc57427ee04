"""Reprocess saved alerts (Avro, gzipped Avro, Parquet, Kafka offset ranges) into the live job's layout.

    ./spark-submit.sh jobs/reprocess.py --config conf/reprocess_ztf.yaml --input alerts/2026-03-22/ [--count-only]
"""

from __future__ import annotations

import argparse
import logging

from fink_spark.cli import run_cli
from fink_spark.config import load_config
from fink_spark.errors import ConfigError
from fink_spark.reprocess import KafkaRange, reprocess
from fink_spark.session import build_session


def main() -> None:
    parser = argparse.ArgumentParser(description="Reprocess saved Fink alerts with filters into Parquet.")
    parser.add_argument("--config", required=True, help="YAML configuration (survey, schema, filters, output)")
    parser.add_argument("--input", nargs="*", default=[], help="files, folders or globs (local or Hadoop URIs)")
    parser.add_argument("--kafka-range", action="append", default=[], help="TOPIC:PARTITION=START-END[,...]")
    parser.add_argument("--topic", default="reprocessed", help="topic column of alerts read from files")
    parser.add_argument("--count-only", action="store_true", help="count the alerts that pass, write nothing")
    parser.add_argument("--files-per-batch", type=int, default=2000, help="input files per micro-batch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    config = load_config(args.config, kafka_required=bool(args.kafka_range))
    ranges = [KafkaRange.parse(text) for text in args.kafka_range]
    if not args.input and not ranges:
        raise ConfigError("Give at least one --input or --kafka-range.")
    spark = build_session("fink-spark-reprocess", conf={
        "spark.sql.files.openCostInBytes": str(128 * 1024),  # many small files: pack them into few tasks
        "spark.sql.execution.arrow.maxRecordsPerBatch": "256",  # gzipped files pass whole through Python
    })
    try:
        count = reprocess(spark, config, args.input, ranges, args.topic, args.count_only, args.files_per_batch)
    finally:
        spark.stop()
    print(f"{count} alerts {'pass the filters' if args.count_only else 'written to ' + config.parquet.path}")


if __name__ == "__main__":
    run_cli(main)
