"""Discover the writer schema of a Fink topic and save it as an .avsc file.

    python -m fink_spark.discover --config conf/fink_ztf.yaml --topic fink_sn_candidates_ztf --output schemas/mine.avsc

It reads the key of the newest message (for Data Transfer topics `ftransfer_*`, of the
first message of `<topic>_schema`), writes the schema and prints a summary.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from fink_spark.cli import SUMMARIES, run_cli
from fink_spark.config import KafkaConfig, load_config
from fink_spark.errors import KafkaAccessError
from fink_spark.kafka_source import key_at, newest, subscribed_partitions
from fink_spark.schemas import schema_fingerprint, writer_schema_from_key
from fink_spark.surveys import Survey

# Fields that Fink adds to the survey's alerts, by survey: shown in the summary.
FINK_FIELDS = {
    "ztf": ["cdsxmatch", "roid", "rf_snia_vs_nonia", "snn_snia_vs_nonia", "snn_sn_vs_all", "mulens",
            "rf_kn_vs_nonkn", "tracklet", "tns", "gaiaClass", "anomaly_score", "lc_features_g", "lc_features_r",
            "mangrove", "finkclass", "tnsclass", "fink_broker_version", "fink_science_version"],
    "lsst": ["clf", "xm", "pred", "misc", "lc_features", "fink_broker_version", "fink_science_version"],
}


TRANSFER_PREFIX = "ftransfer_"


def schema_topic(topic: str) -> str:
    """Data Transfer topics carry their schema in a side topic."""
    return f"{topic}_schema"


def topic_schema(config_kafka: KafkaConfig, topic: str, survey: Survey) -> str:
    """The writer schema of a topic's newest message (Data Transfer: of its schema side topic)."""
    if topic.startswith(TRANSFER_PREFIX):
        side = schema_topic(topic)
        subscribed_partitions(replace(config_kafka, topics=(side,), topic_pattern=None))
        key = key_at(config_kafka, side, 0, 0)
        if key is None:
            raise KafkaAccessError(f"The first message of {side} has no key: no schema to read.")
        return writer_schema_from_key(key, survey)
    kafka = replace(config_kafka, topics=(topic,), topic_pattern=None)
    keys = [message.key for message in newest(kafka, subscribed_partitions(kafka)) if message.key is not None]
    if not keys:
        raise KafkaAccessError(f"Topic {topic} holds no message with a key yet: nothing to discover.")
    return writer_schema_from_key(keys[0], survey)


def summary(schema_text: str, survey: Survey) -> str:
    schema = json.loads(schema_text)
    names = [field["name"] for field in schema["fields"]]
    present = [name for name in FINK_FIELDS[survey.name] if name in names]
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
    parser.add_argument("--config", required=True, help="job configuration (for the servers and credentials)")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--output", required=True, help="where to write the .avsc")
    parser.add_argument("--servers", help="Kafka bootstrap servers, instead of the file's")


def run(args: argparse.Namespace) -> None:
    config = load_config(args.config).with_overrides(servers=args.servers)
    schema_text = topic_schema(config.kafka, args.topic, config.survey)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(json.loads(schema_text), indent=1) + "\n")
    print(f"schema of {args.topic} written to {output}")
    print(summary(schema_text, config.survey))


if __name__ == "__main__":
    run_cli(main)
