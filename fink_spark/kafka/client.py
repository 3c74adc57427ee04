"""The driver's small reads with a plain Kafka client (confluent-kafka), never the alerts'
flow: before a query starts, a short check fails fast and clearly on bad credentials or
missing topics, and reads the newest message keys (the writer schemas) without scanning
the topics; later, the few records at given positions (the quarantine's), the offsets at a
time, a topic's schema (`fink-spark discover`)."""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from fink_spark.config.job import KafkaConfig
from fink_spark.errors import KafkaAccessError
from fink_spark.kafka.source import KAFKA_COLUMNS, KAFKA_RECORD, SCRAM, credentials
from fink_spark.schema.writer import writer_schema_from_key
from fink_spark.surveys import Survey

TRANSFER_PREFIX = "ftransfer_"  # Fink's Data Transfer topics: their schema is in a side topic


log = logging.getLogger(__name__)


def client_config(kafka: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings for the driver-side checks."""
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.servers, "logger": log, "security.protocol": kafka.security_protocol,
    }
    if kafka.ssl_ca:
        config["ssl.ca.location"] = kafka.ssl_ca
    if kafka.username:
        username, password = credentials(kafka)
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

    last, first = [], []
    with peeking_consumer(kafka) as consumer:
        for topic, count in partitions.items():
            for partition in range(count):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
                if high > low:
                    last.append((topic, partition, high - 1))
                start = (starts or {}).get(topic, {}).get(partition)
                if start is not None and low <= start < high - 1:
                    first.append((topic, partition, start))
        return _peeked(consumer, last + first, timeout)


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

    Every partition is read from its first position, and sought forward to its next one past
    any gap: a few quarantined records among thousands are read alone (a seek costs a few
    milliseconds where a new assignment costs ten times more). A message past a position
    means the one there is gone (deleted, or a transaction's marker).
    """
    from confluent_kafka import TopicPartition

    waiting: dict[tuple[str, int], deque[int]] = {}
    for topic, partition, offset in sorted(set(positions)):
        waiting.setdefault((topic, partition), deque()).append(offset)
    found, size = {}, 0
    if not waiting:
        return found
    consumer.assign([TopicPartition(*place, offsets[0]) for place, offsets in waiting.items()])
    while waiting:
        message = consumer.poll(timeout)
        if message is None:
            return found
        if message.error() is not None:
            continue
        place, offset = (message.topic(), message.partition()), message.offset()
        offsets = waiting.get(place)
        if not offsets or offset < offsets[0]:  # fetched before the last seek
            continue
        if offset == offsets[0]:
            found[(*place, offset)] = message
            size += len(message.key() or b"") + len(message.value() or b"")
            if max_bytes is not None and size > max_bytes:
                return found
        while offsets and offsets[0] <= offset:
            offsets.popleft()
        if not offsets:
            del waiting[place]
        elif offsets[0] > offset + 1:
            consumer.seek(TopicPartition(*place, offsets[0]))
    return found


def records_at(kafka: KafkaConfig, positions: list[tuple[str, int, int]], max_bytes: int,
               timeout: float = 10.0) -> pa.Table | None:
    """The records at these (topic, partition, offset) positions, as Spark's Kafka source
    gives them (KAFKA_RECORD), read by the driver, in position order; a position without a
    message (deleted by the broker's retention, or not written yet) is left out. None if they
    weigh more than `max_bytes` (the reading stops there). A position the broker still holds
    but did not give within `timeout` raises KafkaAccessError: it is not gone. An Arrow
    table: Spark makes a frame of it without a Python worker (from a list of tuples, 0.3 s more)."""

    # one fetch of about a megabyte per partition, no read-ahead
    with peeking_consumer(kafka, {"fetch.max.bytes": 1_048_576, "queued.max.messages.kbytes": 1024}) as consumer:
        found = _messages_at(consumer, positions, timeout, max_bytes)
        messages = [found[position] for position in sorted(found)]
        if sum(len(m.key() or b"") + len(m.value() or b"") for m in messages) > max_bytes:
            return None
        _raise_if_held(consumer, [position for position in positions if position not in found], timeout)
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


@contextmanager
def peeking_consumer(kafka: KafkaConfig, settings: dict[str, Any] | None = None) -> Iterator[Any]:
    """A confluent-kafka consumer for the driver's small reads (it commits nothing), closed after use."""
    from confluent_kafka import Consumer

    consumer = Consumer({**client_config(kafka), "group.id": kafka.group_id or "fink-spark-peek",
                         "enable.auto.commit": False, **(settings or {})})
    try:
        yield consumer
    finally:
        consumer.close()


def watermarks(kafka: KafkaConfig, partitions: dict[str, int], timeout: float = 10.0) -> dict[str, dict[int, tuple[int, int]]]:
    """Per partition, the first offset still on the broker (retention deletes older ones)
    and the end offset (the next message's)."""
    from confluent_kafka import TopicPartition

    with peeking_consumer(kafka) as consumer:
        return {
            topic: {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in range(count)}
            for topic, count in partitions.items()
        }


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
    with peeking_consumer(kafka) as consumer:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, millis) for topic, count in partitions.items() for p in range(count)], timeout=timeout)
    offsets: dict[str, dict[int, int]] = {}
    for position in found:
        end = ends[position.topic][position.partition][1]
        offsets.setdefault(position.topic, {})[position.partition] = position.offset if position.offset >= 0 else end
    return offsets


def messages_at(kafka: KafkaConfig, positions: dict[str, dict[int, int]], timeout: float = 10.0) -> list[Message]:
    """The messages at these offsets (one per partition; none where the offset is past the end)."""
    with peeking_consumer(kafka) as consumer:
        return _peeked(consumer, [(topic, p, offset) for topic, parts in positions.items() for p, offset in parts.items()],
                       timeout)


def key_at(kafka: KafkaConfig, topic: str, partition: int, offset: int, timeout: float = 10.0) -> bytes | None:
    """The key of one message."""
    from confluent_kafka import TopicPartition

    with peeking_consumer(kafka) as consumer:
        consumer.assign([TopicPartition(topic, partition, offset)])
        message = consumer.poll(timeout)
        if message is None or message.error() is not None:
            raise KafkaAccessError(f"Could not read {topic}[{partition}] at offset {offset}.")
        key = message.key()
        return bytes(key) if key is not None else None


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
