"""The `stream` and `reprocess` commands, shared by `fink-spark` and spark-submit's jobs/."""

from __future__ import annotations

import argparse
import logging
import os

from pyspark.sql import SparkSession

from fink_spark.cli import SUMMARIES
from fink_spark.config import load_config
from fink_spark.errors import ConfigError
from fink_spark.reprocess import FILES_PER_BATCH, KafkaRange, reprocess
from fink_spark.session import build_session, local_session
from fink_spark.streaming import prepare_stream, run_stream

STREAM_HELP = SUMMARIES["stream"]
REPROCESS_HELP = SUMMARIES["reprocess"]


def _spark_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--master", default="local[*]",
                        help="Spark master when run as a command (under spark-submit, spark-submit's own)")
    parser.add_argument("--driver-memory", default="1g", help="driver heap when run as a command")


def log_progress() -> None:
    """The job's own lines (batches, schemas met, progress) at INFO; py4j's chatter hidden."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("py4j").setLevel(logging.WARNING)


def session(app: str, args: argparse.Namespace, conf: dict[str, str] | None = None) -> SparkSession:
    """spark-submit's session when under it; else local Spark with the connector jars."""
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # spark-submit started the JVM and set master and jars
        return build_session(app, conf=conf)
    return local_session(app, args.master, args.driver_memory, conf)


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML configuration file (see conf/)")
    parser.add_argument("--available-now", action="store_true", help="consume what is there, then stop")
    parser.add_argument("--servers", help="Kafka bootstrap servers, instead of the file's kafka.servers")
    _spark_options(parser)


def stream(args: argparse.Namespace) -> None:
    log_progress()
    config = load_config(args.config).with_overrides(available_now=args.available_now, servers=args.servers)
    plan = prepare_stream(config)
    spark = session("fink-spark-stream", args)
    try:
        run_stream(spark, plan)
    finally:
        spark.stop()


def add_reprocess_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML configuration (survey, schema, filters, output)")
    parser.add_argument("--input", nargs="*", default=[], help="files, folders or globs (local or Hadoop URIs)")
    parser.add_argument("--kafka-range", action="append", default=[], help="TOPIC:PARTITION=START-END[,...]")
    parser.add_argument("--topic", default="reprocessed", help="topic column of alerts read from files")
    parser.add_argument("--count-only", action="store_true", help="count the alerts that pass, write nothing")
    parser.add_argument("--files-per-batch", type=int, default=FILES_PER_BATCH, help="input files per micro-batch")
    _spark_options(parser)


def reprocess_command(args: argparse.Namespace) -> None:
    log_progress()
    config = load_config(args.config, kafka_required=bool(args.kafka_range))
    ranges = [KafkaRange.parse(text) for text in args.kafka_range]
    if not args.input and not ranges:
        raise ConfigError("Give at least one --input or --kafka-range.")
    spark = session("fink-spark-reprocess", args, {
        "spark.sql.files.openCostInBytes": str(128 * 1024),  # many small files: pack them into few tasks
        "spark.sql.execution.arrow.maxRecordsPerBatch": "256",  # files pass whole through Python
    })
    try:
        count = reprocess(spark, config, args.input, ranges, args.topic, args.count_only, args.files_per_batch)
    finally:
        spark.stop()
    print(f"{count} alerts {'pass the filters' if args.count_only else 'written to ' + config.output.path}")
