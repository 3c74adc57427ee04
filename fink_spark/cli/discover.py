"""Discover the writer schema of a Fink topic and save it as an .avsc file.

    fink-spark discover --credentials ztf --topic fink_sn_candidates_ztf --output schemas/mine.avsc

It reads the key of the newest message (for Data Transfer topics `ftransfer_*`, of the
first message of `<topic>_schema`), writes the schema and prints a summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fink_spark.cli import SUMMARIES, run_cli
from fink_spark.cli.flags import add_source_flags, source_config
from fink_spark.errors import ConfigError
from fink_spark.kafka.client import topic_schema
from fink_spark.schema.writer import schema_fingerprint
from fink_spark.surveys import Survey


def summary(schema_text: str, survey: Survey) -> str:
    schema = json.loads(schema_text)
    names = [field["name"] for field in schema["fields"]]
    present = [name for name in survey.fink_fields if name in names]
    return "\n".join(
        [
            f"fields:      {len(names)}",
            f"fink fields: {', '.join(present) or 'none (a raw survey alert)'}",
            f"fingerprint: {schema_fingerprint(schema_text)} (Avro CRC-64 of the canonical form)",
        ]
    )


HELP = SUMMARIES["discover"]


def main() -> None:
    parser = argparse.ArgumentParser(description=HELP)
    add_arguments(parser)
    run(parser.parse_args())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_flags(parser)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--output", required=True, help="where to write the .avsc")


def run(args: argparse.Namespace) -> None:
    args.topics, args.topic_pattern = args.topic, None  # the topic discovered: its survey is its suffix
    survey, kafka = source_config(args)
    if survey is None:
        raise ConfigError(f"Which survey is {args.topic}? Give --survey ztf or --survey lsst.")
    schema_text = topic_schema(kafka, args.topic, survey)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(json.loads(schema_text), indent=1) + "\n")
    print(f"schema of {args.topic} written to {output}")
    print(summary(schema_text, survey))


if __name__ == "__main__":
    run_cli(main)
