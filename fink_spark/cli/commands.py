"""The `stream`, `reprocess`, `config`, `status` and `topics` commands, shared by
`fink-spark` and spark-submit's jobs/."""

from __future__ import annotations

import argparse
import json
import logging
import os

import yaml
from pyspark.sql import SparkSession

from fink_spark.cli import SUMMARIES
from fink_spark.cli.flags import TOPIC_NAMING, add_output_flags, add_source_flags, add_start_flags, config_from_flags, source_config
from fink_spark.config.job import effective_config
from fink_spark.config.session import build_session, local_session
from fink_spark.errors import ConfigError
from fink_spark.kafka.positions import status, status_table, topics_table
from fink_spark.run.inputs import FILES_PER_BATCH, KafkaRange
from fink_spark.run.ledger import Ledger
from fink_spark.run.reprocess import reprocess
from fink_spark.run.stream import (
    StreamPlan,
    checkpoint_files,
    committed_offsets,
    prepare_stream,
    refuse_start_on_a_used_checkpoint,
    run_stream,
)
from fink_spark.sink.outputs import yields_text
from fink_spark.sink.quarantine import waiting
from fink_spark.state import STREAM_QUERY

STREAM_HELP = SUMMARIES["stream"]
REPROCESS_HELP = SUMMARIES["reprocess"]


def add_spark_options(parser: argparse.ArgumentParser) -> None:
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
    add_source_flags(parser)
    add_start_flags(parser)
    add_output_flags(parser)
    add_spark_options(parser)
    parser.epilog = TOPIC_NAMING


def stream_plan(args: argparse.Namespace) -> StreamPlan:
    """The stream command's configuration (file and flags), checked, and its plan."""
    config = config_from_flags(args)
    if args.start_at:
        refuse_start_on_a_used_checkpoint(config)
    return prepare_stream(config)


def stream(args: argparse.Namespace) -> None:
    log_progress()
    plan = stream_plan(args)
    spark = session("fink-spark-stream", args)
    try:
        run_stream(spark, plan)
    finally:
        spark.stop()


def add_reprocess_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_flags(parser)
    add_output_flags(parser)
    parser.add_argument("--input", nargs="*", default=[], help="files, folders or globs (local or Hadoop URIs)")
    parser.add_argument("--kafka-range", action="append", default=[], help="TOPIC:PARTITION=START-END[,...]")
    parser.add_argument("--topic", default="reprocessed", help="topic column of alerts read from files")
    parser.add_argument("--count-only", action="store_true", help="count the alerts that pass, write nothing")
    parser.add_argument("--files-per-batch", type=int, default=FILES_PER_BATCH, help="input files per micro-batch")
    add_spark_options(parser)


def reprocess_command(args: argparse.Namespace) -> None:
    log_progress()
    config = config_from_flags(args, kafka_required=bool(args.kafka_range))
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


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_flags(parser)
    add_start_flags(parser)
    add_output_flags(parser)


def print_config(args: argparse.Namespace) -> None:
    """The configuration a job given these flags would run with, defaults included."""
    config = config_from_flags(args, kafka_required=False)
    print(yaml.safe_dump(effective_config(config), sort_keys=False), end="")


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_flags(parser)
    add_output_flags(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (partitions, lag, yields, ...)")


def print_status(args: argparse.Namespace) -> None:
    """Each partition's checkpoint position, end offset, lag and oldest unread alert; each
    filter's yield over the batches so far."""
    config = config_from_flags(args)
    state = checkpoint_files(config)
    committed = committed_offsets(state)
    rows = status(config.kafka, committed)  # type: ignore[arg-type]
    lag = sum(row.lag for row in rows)
    records, batches = waiting(state)
    yields = Ledger(state, STREAM_QUERY).yields()
    if args.json:
        print(json.dumps({
            "partitions": [{"topic": row.topic, "partition": row.partition, "checkpoint_at": row.committed,
                            "end_offset": row.end, "lag": row.lag,
                            "oldest_unread": row.oldest_unread.isoformat() if row.oldest_unread else None} for row in rows],
            "lag": lag, "checkpoint": config.output.checkpoint if committed else None,
            "quarantine_waiting": {"records": records, "batches": batches},
            "yields": [{"filter": label, "reached": reached, "passed": passed} for label, (reached, passed) in yields.items()],
        }, indent=1))
        return
    print("\n".join(status_table(rows)))
    where = "checkpoint " + config.output.checkpoint if committed else (
        f"no checkpoint yet at {config.output.checkpoint}: a new job starts at {config.kafka.starting_offsets}")  # type: ignore[union-attr]
    print(f"{lag:,} alerts not read yet ({where})")
    if batches:
        print(f"{records:,} quarantined records of {batches} micro-batch{'es' if batches > 1 else ''} not in the quarantine "
              "yet: a running job appends them within a minute, a stopped one at its next start")
    if yields:
        print(f"yields so far: {yields_text(yields)}")


def add_topics_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_flags(parser)
    parser.epilog = TOPIC_NAMING


def print_topics(args: argparse.Namespace) -> None:
    """The topics these credentials may read."""
    _, kafka = source_config(args)
    print("\n".join(topics_table(kafka)))
