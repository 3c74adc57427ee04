"""Reading Fink topics: Spark's Kafka source for the data, and small driver-side checks.

The alerts themselves only ever flow through Spark's Kafka source. Before a query
starts, a short check with a plain Kafka client (confluent-kafka) fails fast and
clearly on bad credentials or missing topics, and reads the newest message keys
(the writer schemas) without scanning the topics.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fink_spark.config import KafkaConfig
from fink_spark.errors import ConfigError, KafkaAccessError
from fink_spark.schemas import writer_schema_from_key
from fink_spark.surveys import Survey

TRANSFER_PREFIX = "ftransfer_"  # Fink's Data Transfer topics: their schema is in a side topic

log = logging.getLogger(__name__)

SCRAM = "SCRAM-SHA-512"
# The columns of Spark's Kafka source that the job reads, typed as Spark gives them
KAFKA_RECORD = pa.schema([("key", pa.binary()), ("value", pa.binary()), ("topic", pa.string()), ("partition", pa.int32()),
                          ("offset", pa.int64()), ("timestamp", pa.timestamp("us", tz="UTC"))])
KAFKA_COLUMNS = tuple(KAFKA_RECORD.names)
FETCH_BYTES_PER_PARTITION = 16 * 1024 * 1024


def _credentials(kafka: KafkaConfig) -> tuple[str, str]:
    """The SASL user name and password (the config loader requires both or neither)."""
    if kafka.username is None or kafka.password is None:
        raise ConfigError("kafka: give both username and password (or credentials:), or neither for a broker without SASL.")
    return kafka.username, kafka.password.reveal()


def _jaas(kafka: KafkaConfig) -> str:
    username, password = _credentials(kafka)
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
    kafka: KafkaConfig, query: str = "alerts", min_partitions: int = 1, max_offsets: int | None = None,
    starting_offsets: str | None = None,
) -> dict[str, str]:
    """Options of one streaming query's Kafka source.

    Spark pools its Kafka consumers by group id: queries that run side by side must not
    share one, so every query but `alerts` (which keeps the configured group id) reads as
    `<group id>-<query>`. The queries assign partitions and never join their group.
    `max_offsets` bounds a micro-batch (default: `kafka.max_offsets_per_trigger`);
    `starting_offsets` is where a new checkpoint starts: earliest, latest or Spark's JSON of
    offsets (a start at a time, resolved by `offsets_at_time`).
    `min_partitions` splits the offsets of busy Kafka partitions over several tasks, except
    when deleted offsets are skipped: Spark's Kafka reader then hands its consumer back to the
    pool and goes on using it (`KafkaDataConsumer.get`), so a second task on the same Kafka
    partition may borrow it and fail with "KafkaConsumer is not safe for multi-threaded access".
    """
    options = spark_kafka_options(kafka)
    if kafka.group_id and query != "alerts":
        options["kafka.group.id"] = f"{kafka.group_id}-{query}"
    skip_losses = kafka.on_data_loss == "skip"
    options["minPartitions"] = str(1 if skip_losses else min_partitions)
    options["failOnDataLoss"] = str(not skip_losses).lower()
    options["startingOffsets"] = starting_offsets or kafka.starting_offsets
    max_offsets = max_offsets or kafka.max_offsets_per_trigger
    if max_offsets:
        options["maxOffsetsPerTrigger"] = str(max_offsets)
    return options


def read_stream(
    spark: SparkSession, kafka: KafkaConfig, query: str = "alerts", min_partitions: int = 1,
    max_offsets: int | None = None, starting_offsets: str | None = None,
) -> DataFrame:
    """The live stream of raw Kafka records (key, value, topic, partition, offset, timestamp)."""
    options = stream_options(kafka, query, min_partitions, max_offsets, starting_offsets)
    return spark.readStream.format("kafka").options(**options).load().select(*KAFKA_COLUMNS)


def read_offset_range(
    spark: SparkSession, kafka: KafkaConfig, topic: str, start: dict[int, int], end: dict[int, int],
) -> DataFrame:
    """The raw records of a topic's offsets [start, end) per partition, as a stream that
    starts at the range (offsets past its end are dropped)."""
    options = {k: v for k, v in spark_kafka_options(kafka).items() if k not in ("subscribe", "subscribePattern")}
    frame = (
        spark.readStream.format("kafka").options(**options)
        .option("assign", json.dumps({topic: sorted(start)}))
        .option("startingOffsets", offsets_json({topic: start}))
        .load()
        .select(*KAFKA_COLUMNS)
    )
    inside = F.lit(False)
    for partition, last in end.items():
        inside = inside | ((F.col("partition") == partition) & (F.col("offset") < last))
    return frame.where(inside)


def client_config(kafka: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings for the driver-side checks."""
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.servers, "logger": log, "security.protocol": kafka.security_protocol,
    }
    if kafka.ssl_ca:
        config["ssl.ca.location"] = kafka.ssl_ca
    if kafka.username:
        username, password = _credentials(kafka)
        config.update({"sasl.mechanisms": SCRAM, "sasl.username": username, "sasl.password": password})
    return config


def _client_errors(config: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    errors: list[Any] = []
    return {**config, "error_cb": errors.append}, errors


def readable_topics(kafka: KafkaConfig, timeout: float = 15.0) -> dict[str, int]:
    """Every topic these credentials may describe (Kafka's metadata answers only with the
    topics the user's ACLs allow), with its partition count."""
    return _topics(kafka, timeout)[1]


def _topics(kafka: KafkaConfig, timeout: float) -> tuple[Any, dict[str, int]]:
    """An admin client and the topics it sees, or a KafkaAccessError saying why none."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient

    config, errors = _client_errors(client_config(kafka))
    who = f"user {kafka.username!r}" if kafka.username else "an anonymous client"
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception as error:  # noqa: BLE001 - explained below from the client's own errors
        admin.poll(1)  # serves error_cb with the client's own errors
        if any(e.code() == KafkaError._AUTHENTICATION for e in errors):
            raise KafkaAccessError(
                f"Authentication failed for {who} on {kafka.servers} (SASL {SCRAM}): "
                "check the username and password Fink gave you."
            ) from None
        raise KafkaAccessError(
            f"Cannot reach the Kafka brokers {kafka.servers} as {who}: {error}. "
            "Check 'kafka.servers' and your network."
        ) from None
    return admin, {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None and not name.startswith("__")
    }


def subscribed_partitions(kafka: KafkaConfig, timeout: float = 15.0) -> dict[str, int]:
    """The subscribed topics and their partition counts, or a KafkaAccessError saying why not."""
    from confluent_kafka import KafkaError

    admin, available = _topics(kafka, timeout)
    who = f"user {kafka.username!r}" if kafka.username else "an anonymous client"
    if kafka.topic_pattern:
        pattern = re.compile(kafka.topic_pattern)
        chosen = {name: count for name, count in available.items() if pattern.fullmatch(name)}
        if not chosen:
            raise KafkaAccessError(
                f"No topic on {kafka.servers} matches 'kafka.topic_pattern' {kafka.topic_pattern!r}."
            )
        return chosen
    missing = [topic for topic in kafka.topics if topic not in available]
    for topic in missing:
        error = admin.list_topics(topic=topic, timeout=timeout).topics[topic].error
        if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise KafkaAccessError(
                f"User {kafka.username!r} is not authorized to read topic {topic} on {kafka.servers}: "
                "ask Fink for access, or remove it from 'kafka.topics'."
            )
    if missing:
        raise KafkaAccessError(
            f"Topic(s) {', '.join(missing)} do not exist on {kafka.servers}. "
            f"Topics visible to {who}: {', '.join(sorted(available)) or 'none'}."
        )
    return {topic: available[topic] for topic in kafka.topics}


@dataclass(frozen=True)
class Message:
    """What the job peeks at before it starts: a message's key (its writer schema), size and
    place (its Kafka timestamp in ms)."""

    key: bytes | None
    size: int
    topic: str = ""
    partition: int = 0
    timestamp_ms: int | None = None


def newest(
    kafka: KafkaConfig, partitions: dict[str, int], timeout: float = 10.0,
    starts: dict[str, dict[int, int]] | None = None,
) -> list[Message]:
    """The newest message of each subscribed partition (a bounded read), and the message at
    `starts` (where the job will begin reading) where given."""
    from confluent_kafka import TopicPartition

    consumer = _peeking_consumer(kafka)
    last, first = [], []
    try:
        for topic, count in partitions.items():
            for partition in range(count):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
                if high > low:
                    last.append((topic, partition, high - 1))
                start = (starts or {}).get(topic, {}).get(partition)
                if start is not None and low <= start < high - 1:
                    first.append((topic, partition, start))
        return _peeked(consumer, last + first, timeout)
    finally:
        consumer.close()


def _peeked(consumer: Any, positions: list[tuple[str, int, int]], timeout: float) -> list[Message]:
    """What the job needs of the messages at these positions, in their order (none for a position without one)."""
    found = _messages_at(consumer, positions, timeout)
    messages = []
    for message in (found[position] for position in positions if position in found):
        key, value = message.key(), message.value()
        kind, moment = message.timestamp()
        messages.append(Message(bytes(key) if key is not None else None, len(value or b"") + len(key or b""),
                                message.topic(), message.partition(), moment if kind else None))
    return messages


def _messages_at(consumer: Any, positions: list[tuple[str, int, int]], timeout: float,
                 max_bytes: int | None = None) -> dict[tuple[str, int, int], Any]:
    """The messages at these (topic, partition, offset) positions, by position; a position
    whose message is gone (or that no message reached within `timeout`) is left out, and so
    are all the positions still to read once those read weigh more than `max_bytes`.

    Each round assigns every partition at its next position still to read, and takes the
    messages at wanted positions as they come (the next wanted one of a partition may come
    in the same fetch); any other message, such as those after a position, is passed over.
    """
    from confluent_kafka import TopicPartition

    wanted, found, size = set(positions), {}, 0
    while True:
        next_at: dict[tuple[str, int], int] = {}
        for topic, partition, offset in sorted(wanted - found.keys()):
            next_at.setdefault((topic, partition), offset)
        if not next_at:
            return found
        consumer.assign([TopicPartition(topic, partition, offset) for (topic, partition), offset in next_at.items()])
        while next_at:
            message = consumer.poll(timeout)
            if message is None:
                return found
            if message.error() is not None:
                continue
            place, offset = (message.topic(), message.partition()), message.offset()
            if (*place, offset) in wanted and (*place, offset) not in found:
                found[(*place, offset)] = message
                size += len(message.key() or b"") + len(message.value() or b"")
                if max_bytes is not None and size > max_bytes:
                    return found
            if place in next_at and offset >= next_at[place]:
                if offset > next_at[place]:  # the message there is gone (deleted, a transaction's marker)
                    wanted.discard((*place, next_at[place]))
                del next_at[place]


def records_at(kafka: KafkaConfig, positions: list[tuple[str, int, int]], max_bytes: int,
               timeout: float = 10.0) -> pa.Table | None:
    """The records at these (topic, partition, offset) positions, as Spark's Kafka source
    gives them (KAFKA_RECORD), read by the driver, in position order; a position without a
    message (deleted by the broker's retention, or not written yet) is left out. None if they
    weigh more than `max_bytes` (the reading stops there). A position the broker still holds
    but did not give within `timeout` raises KafkaAccessError: it is not gone. An Arrow
    table: Spark makes a frame of it without a Python worker (from a list of tuples, 0.3 s more)."""

    # one fetch of about a megabyte per partition, no read-ahead
    consumer = _peeking_consumer(kafka, {"fetch.max.bytes": 1_048_576, "queued.max.messages.kbytes": 1024})
    try:
        found = _messages_at(consumer, positions, timeout, max_bytes)
        messages = [found[position] for position in sorted(found)]
        if sum(len(m.key() or b"") + len(m.value() or b"") for m in messages) > max_bytes:
            return None
        _raise_if_held(consumer, [position for position in positions if position not in found], timeout)
    finally:
        consumer.close()
    records = []
    for message in messages:
        kind, millis = message.timestamp()
        moment = datetime.fromtimestamp(millis / 1000, tz=timezone.utc) if kind else None
        records.append((message.key(), message.value(), message.topic(), message.partition(), message.offset(), moment))
    return arrow_records(records)


def _raise_if_held(consumer: Any, missing: list[tuple[str, int, int]], timeout: float) -> None:
    """Raise KafkaAccessError if the broker still holds one of these positions, which it did not give."""
    from confluent_kafka import TopicPartition

    bounds = {(topic, partition): consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
              for topic, partition in {(topic, partition) for topic, partition, _ in missing}}
    held = [(topic, partition, offset) for topic, partition, offset in missing
            if bounds[(topic, partition)][0] <= offset < bounds[(topic, partition)][1]]
    if held:
        topic, partition, offset = held[0]
        raise KafkaAccessError(f"The Kafka broker did not give back {topic}[{partition}] offset {offset} within {timeout:.0f} s "
                               f"({len(held)} positions), though it still holds it: is the broker overloaded or unreachable?")


def arrow_records(rows: list[tuple]) -> pa.Table:
    """(key, value, topic, partition, offset, timestamp) rows as an Arrow table of KAFKA_RECORD,
    which Spark makes a frame of in the JVM (a list of tuples needs a Python worker)."""
    return pa.Table.from_pylist([dict(zip(KAFKA_COLUMNS, row)) for row in rows], schema=KAFKA_RECORD)


def _peeking_consumer(kafka: KafkaConfig, settings: dict[str, Any] | None = None) -> Any:
    from confluent_kafka import Consumer

    return Consumer({**client_config(kafka), "group.id": kafka.group_id or "fink-spark-peek", "enable.auto.commit": False,
                     **(settings or {})})


def watermarks(kafka: KafkaConfig, partitions: dict[str, int], timeout: float = 10.0) -> dict[str, dict[int, tuple[int, int]]]:
    """Per partition, the first offset still on the broker (retention deletes older ones)
    and the end offset (the next message's)."""
    from confluent_kafka import TopicPartition

    consumer = _peeking_consumer(kafka)
    try:
        return {
            topic: {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in range(count)}
            for topic, count in partitions.items()
        }
    finally:
        consumer.close()


def earliest_offsets(kafka: KafkaConfig, partitions: dict[str, int], timeout: float = 10.0) -> dict[str, dict[int, int]]:
    """The first offset still on the broker, per partition."""
    return {topic: {p: low for p, (low, _) in parts.items()} for topic, parts in watermarks(kafka, partitions, timeout).items()}


def offsets_at_time(kafka: KafkaConfig, partitions: dict[str, int], when: datetime,
                    timeout: float = 10.0) -> dict[str, dict[int, int]]:
    """Per partition, the first message at or after `when` (Kafka's index of timestamps);
    the end offset where every message is older."""
    from confluent_kafka import TopicPartition

    millis = int(when.timestamp() * 1000)
    ends = watermarks(kafka, partitions, timeout)
    consumer = _peeking_consumer(kafka)
    try:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, millis) for topic, count in partitions.items() for p in range(count)], timeout=timeout)
    finally:
        consumer.close()
    offsets: dict[str, dict[int, int]] = {}
    for position in found:
        end = ends[position.topic][position.partition][1]
        offsets.setdefault(position.topic, {})[position.partition] = position.offset if position.offset >= 0 else end
    return offsets


def messages_at(kafka: KafkaConfig, positions: dict[str, dict[int, int]], timeout: float = 10.0) -> list[Message]:
    """The messages at these offsets (one per partition; none where the offset is past the end)."""
    consumer = _peeking_consumer(kafka)
    try:
        return _peeked(consumer, [(topic, p, offset) for topic, parts in positions.items() for p, offset in parts.items()],
                       timeout)
    finally:
        consumer.close()


def key_at(kafka: KafkaConfig, topic: str, partition: int, offset: int, timeout: float = 10.0) -> bytes | None:
    """The key of one message."""
    from confluent_kafka import TopicPartition

    consumer = _peeking_consumer(kafka)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        message = consumer.poll(timeout)
        if message is None or message.error() is not None:
            raise KafkaAccessError(f"Could not read {topic}[{partition}] at offset {offset}.")
        key = message.key()
        return bytes(key) if key is not None else None
    finally:
        consumer.close()


def offsets_json(offsets: dict[str, dict[int, int]]) -> str:
    """Spark's JSON form of per-partition offsets."""
    return json.dumps({topic: {str(p): o for p, o in parts.items()} for topic, parts in offsets.items()})


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
