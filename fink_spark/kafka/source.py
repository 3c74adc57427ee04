"""Spark's Kafka source, which the alerts themselves only ever flow through: its options
(SASL/SCRAM-SHA-512 as Fink issues credentials), subscriptions for the stream, and offset
ranges for reprocessing."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fink_spark.config.job import KafkaConfig
from fink_spark.errors import ConfigError
from fink_spark.state import STREAM_QUERY

log = logging.getLogger(__name__)

SCRAM = "SCRAM-SHA-512"

# The columns of Spark's Kafka source that the job reads, typed as Spark gives them
KAFKA_RECORD = pa.schema([("key", pa.binary()), ("value", pa.binary()), ("topic", pa.string()), ("partition", pa.int32()),
                          ("offset", pa.int64()), ("timestamp", pa.timestamp("us", tz="UTC"))])


KAFKA_COLUMNS = tuple(KAFKA_RECORD.names)

FETCH_BYTES_PER_PARTITION = 16 * 1024 * 1024


def credentials(kafka: KafkaConfig) -> tuple[str, str]:
    """The SASL user name and password (the config loader requires both or neither)."""
    if kafka.username is None or kafka.password is None:
        raise ConfigError("kafka: give both username and password (or credentials:), or neither for a broker without SASL.")
    return kafka.username, kafka.password.reveal()


def _jaas(kafka: KafkaConfig) -> str:
    username, password = credentials(kafka)
    password = password.replace("\\", "\\\\").replace('"', '\\"')
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{username}" password="{password}";'
    )


def spark_kafka_options(kafka: KafkaConfig) -> dict[str, str]:
    """Options of Spark's Kafka source common to streaming and batch reads."""
    options = {
        "kafka.bootstrap.servers": kafka.servers,
        # Fail instead of waiting forever when the broker rejects us or is gone.
        "kafka.request.timeout.ms": "30000",
        "kafka.default.api.timeout.ms": "60000",
        # Alerts weigh 50 to 250 kB: Kafka's defaults (1 MB per partition per fetch, a 64 kB
        # socket buffer) fetch a handful per round trip and halve the reading speed.
        "kafka.max.partition.fetch.bytes": str(FETCH_BYTES_PER_PARTITION),
        "kafka.receive.buffer.bytes": "-1",
    }
    if kafka.topic_pattern:
        options["subscribePattern"] = kafka.topic_pattern
    else:
        options["subscribe"] = ",".join(kafka.topics)
    options["kafka.security.protocol"] = kafka.security_protocol
    if kafka.username:
        options["kafka.sasl.mechanism"] = SCRAM
        options["kafka.sasl.jaas.config"] = _jaas(kafka)
    if kafka.ssl_ca:
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = kafka.ssl_ca
    if kafka.group_id:
        options["kafka.group.id"] = kafka.group_id
    return options


def stream_options(
    kafka: KafkaConfig, query: str = STREAM_QUERY, min_partitions: int = 1, max_offsets: int | None = None,
    starting_offsets: str | None = None,
) -> dict[str, str]:
    """Options of one streaming query's Kafka source.

    Spark pools its Kafka consumers by group id: queries that run side by side must not
    share one, so every query but the stream's (`alerts`, which keeps the configured group id) reads as
    `<group id>-<query>`. The queries assign partitions and never join their group.
    `max_offsets` bounds a micro-batch (`run.stream.batch_bound` decides it);
    `starting_offsets` is where a new checkpoint starts: earliest, latest or Spark's JSON of
    offsets (a start at a time, resolved by `offsets_at_time`).
    `min_partitions` splits the offsets of busy Kafka partitions over several tasks, except
    when deleted offsets are skipped: Spark's Kafka reader then hands its consumer back to the
    pool and goes on using it (`KafkaDataConsumer.get`), so a second task on the same Kafka
    partition may borrow it and fail with "KafkaConsumer is not safe for multi-threaded access".
    """
    options = spark_kafka_options(kafka)
    if kafka.group_id and query != STREAM_QUERY:
        options["kafka.group.id"] = f"{kafka.group_id}-{query}"
    skip_losses = kafka.on_data_loss == "skip"
    options["minPartitions"] = str(1 if skip_losses else min_partitions)
    options["failOnDataLoss"] = str(not skip_losses).lower()
    options["startingOffsets"] = starting_offsets or kafka.starting_offsets
    if max_offsets:
        options["maxOffsetsPerTrigger"] = str(max_offsets)
    return options


def read_stream(
    spark: SparkSession, kafka: KafkaConfig, query: str = STREAM_QUERY, min_partitions: int = 1,
    max_offsets: int | None = None, starting_offsets: str | None = None,
) -> DataFrame:
    """The live stream of raw Kafka records (key, value, topic, partition, offset, timestamp).

    Parameters
    ----------
    spark
        The session.
    kafka
        The broker, its credentials and the topics.
    query, min_partitions, max_offsets, starting_offsets
        As `stream_options` takes them: the query's name (its consumer group's), tasks per
        micro-batch at least, records per micro-batch at most (None: no bound), and where a
        new checkpoint starts (None: the configuration's).
    """
    options = stream_options(kafka, query, min_partitions, max_offsets, starting_offsets)
    return spark.readStream.format("kafka").options(**options).load().select(*KAFKA_COLUMNS)


def read_offset_range(spark: SparkSession, kafka: KafkaConfig, topic: str,
                      spans: dict[int, tuple[tuple[int, int], ...]]) -> DataFrame:
    """The raw records of a topic's offsets in the [first, end) spans of each partition, as
    a stream that starts at the first span (the offsets outside them are dropped)."""
    options = {k: v for k, v in spark_kafka_options(kafka).items() if k not in ("subscribe", "subscribePattern")}
    start = {partition: min(first for first, _ in of_partition) for partition, of_partition in spans.items()}
    frame = (
        spark.readStream.format("kafka").options(**options)
        .option("assign", json.dumps({topic: sorted(start)}))
        .option("startingOffsets", offsets_json({topic: start}))
        .load()
        .select(*KAFKA_COLUMNS)
    )
    inside = F.lit(False)
    for partition, of_partition in spans.items():
        for first, end in of_partition:
            inside = inside | ((F.col("partition") == partition) & F.col("offset").between(first, end - 1))
    return frame.where(inside)


def offsets_json(offsets: dict[str, dict[int, int]]) -> str:
    """Spark's JSON form of per-partition offsets."""
    return json.dumps({topic: {str(p): o for p, o in parts.items()} for topic, parts in offsets.items()})
