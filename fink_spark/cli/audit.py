"""`fink-spark audit`: whether every offset the live job read is in its outputs, once
(`fink_spark.run.audit`); no Spark needed. Exit status 0: complete; 1: not."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from fink_spark.cli.flags import add_output_flags, add_source_flags, config_from_flags
from fink_spark.kafka.client import watermarks
from fink_spark.run.audit import audit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_flags(parser)
    add_output_flags(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (complete, accounted, missing, ...)")


def run(args: argparse.Namespace, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    config = config_from_flags(args, kafka_required=False)
    result = audit(config)
    if config.kafka is not None and config.kafka.servers:  # with the broker: what is still unread
        partitions: dict[str, int] = {}
        for audited in result.partitions:
            partitions[audited.topic] = max(partitions.get(audited.topic, 0), audited.partition + 1)
        ends = {topic: {partition: end for partition, (_, end) in parts.items()}
                for topic, parts in watermarks(config.kafka, partitions).items()}
        result = audit(config, ends)
    if args.json:
        out.write(json.dumps(result.as_json(), indent=1) + "\n")
    else:
        out.write("\n".join([*(audited.line() for audited in result.partitions), result.verdict()]) + "\n")
    if not result.complete:
        sys.exit(1)
