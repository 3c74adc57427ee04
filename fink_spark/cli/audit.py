"""`fink-spark audit`: whether every offset the live job read is in its outputs, once
(`fink_spark.run.audit`); no Spark needed, but with `--repair`, which reads the missing
offsets again and removes duplicates (`fink_spark.run.repair`). Exit status 0: complete; 1: not."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from fink_spark.cli.commands import add_spark_options, log_progress, session
from fink_spark.cli.flags import add_output_flags, add_source_flags, config_from_flags
from fink_spark.config.job import JobConfig
from fink_spark.kafka.client import watermarks
from fink_spark.run.audit import Audit, audit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_flags(parser)
    add_output_flags(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (complete, accounted, missing, ...)")
    parser.add_argument("--repair", action="store_true",
                        help="read the missing offsets still on the broker again into the outputs (decoded, filtered "
                             "and quarantined as the job does), keep one copy of duplicated rows, then audit again")
    add_spark_options(parser)


def audited(config: JobConfig) -> Audit:
    """The audit, with what is still unread when the broker is known."""
    result = audit(config)
    if config.kafka is None or not config.kafka.servers:
        return result
    partitions: dict[str, int] = {}
    for partition in result.partitions:
        partitions[partition.topic] = max(partitions.get(partition.topic, 0), partition.partition + 1)
    ends = {topic: {partition: end for partition, (_, end) in parts.items()}
            for topic, parts in watermarks(config.kafka, partitions).items()}
    return audit(config, ends)


def run(args: argparse.Namespace, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    config = config_from_flags(args, kafka_required=False)
    result = audited(config)
    if args.repair and not result.complete:
        from fink_spark.run.repair import repair  # Spark, only to repair

        log_progress()
        spark = session("fink-spark-repair", args)
        try:
            done = repair(spark, config, result)
        finally:
            spark.stop()
        out.write("\n".join(done.lines()) + "\n")
        result = audited(config)
    if args.json:
        out.write(json.dumps(result.as_json(), indent=1) + "\n")
    else:
        out.write("\n".join(result.lines()) + "\n")
    if not result.complete:
        sys.exit(1)
