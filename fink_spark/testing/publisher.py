"""Replay saved alerts into a Kafka topic the way Fink publishes them.

Value: one schemaless Avro datum per message (no container header, no magic byte).
Key: the writer schema as JSON, or a version string as older Fink streams had.
For volume, each alert can be sent several times with new ids; for a live stream,
at a steady rate.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import string
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from fink_spark.surveys import SURVEYS, Survey, value_at

log = logging.getLogger(__name__)

ID_STRIDE = 10**12
_LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class SavedAlerts:
    """The alerts of one Avro container file and the schema that wrote them."""

    path: Path
    schema_text: str
    records: list[dict[str, Any]]


def avro_files(paths: Iterable[str | Path]) -> list[Path]:
    """Avro files named directly or found in folders, sorted."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.avro") if p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"No such file or folder: {path}")
    return found


def read_saved_alerts(paths: Iterable[str | Path]) -> Iterator[SavedAlerts]:
    for path in avro_files(paths):
        with path.open("rb") as handle:
            reader = fastavro.reader(handle)
            schema_text = reader.metadata["avro.schema"]
            yield SavedAlerts(path, schema_text, list(reader))


def _object_suffix(copy: int, width: int) -> str:
    letters = []
    for _ in range(width):
        copy, digit = divmod(copy, 26)
        letters.append(_LETTERS[digit])
    return "".join(reversed(letters))


def _with_value(record: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of a record with one (dotted) field replaced; the records on the way are
    copied, everything else is shared."""
    first, _, rest = path.partition(".")
    return {**record, first: _with_value(record[first], rest, value) if rest else value}


def replicate(record: dict[str, Any], survey: Survey, copy: int) -> dict[str, Any]:
    """A copy of a real alert with new ids (copy 0 is the alert itself).

    Every copy of the alert id (`Survey.id_copies`: candid and candidate.candid,
    diaSourceId and diaSource.diaSourceId) moves by copy x 10^12; an object id that is a
    name (ZTF's 'ZTF26aamcbly') gets new last letters, a numeric one stays.
    """
    if copy == 0:
        return record
    clone = record
    for path in survey.id_copies:
        value = value_at(record, path)
        if value is not None:
            clone = _with_value(clone, path, value + copy * ID_STRIDE)
    object_id = value_at(record, survey.object_column)
    if isinstance(object_id, str):
        clone = _with_value(clone, survey.object_column, object_id[:5] + _object_suffix(copy, len(object_id) - 5))
    return clone


def encode(record: dict[str, Any], parsed_schema: Any) -> bytes:
    """One schemaless Avro datum."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed_schema, record)
    return buffer.getvalue()


def _avro_scalar(value: int | str) -> bytes:
    """The Avro encoding of a long (zig-zag varint) or a string (length, then UTF-8)."""
    if isinstance(value, str):
        data = value.encode("utf-8")
        return _avro_scalar(len(data)) + data
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _changed_ids(original: dict[str, Any], copy: dict[str, Any]) -> dict[Any, Any]:
    """{old: new} for every id `replicate` changed. It copies every other value as it is
    (the same object), and replaces a record only to change an id in it: only those are
    looked into."""
    changed = {}
    for name, value in original.items():
        if copy[name] is value:
            continue
        if isinstance(value, dict):
            changed |= {v: copy[name][k] for k, v in value.items() if copy[name][k] is not v}
        else:
            changed[value] = copy[name]
    return changed


class ReplicaEncoder:
    """Encoded copies of one real alert with new ids, without encoding the whole alert again.

    Avro has no offsets: an alert's bytes are its fields' bytes one after the other, so a
    copy is the original's bytes with each id's encoding swapped for the new id's. Encoding
    a Fink alert with fastavro takes about 10 ms (its unions are checked field by field);
    swapping takes microseconds. Where the ids are is checked once against a full encoding
    of copy 1; if the check fails, every copy is fully encoded.
    """

    def __init__(self, record: dict[str, Any], parsed_schema: Any, survey: Survey) -> None:
        self.record, self.parsed_schema, self.survey = record, parsed_schema, survey
        self.original = encode(record, parsed_schema)
        copy_1 = replicate(record, survey, 1)
        first_copy = _changed_ids(record, copy_1)
        expected = encode(copy_1, parsed_schema)
        # An id's bytes may also stand where `replicate` keeps the old id (e.g. an LSST
        # alert's own source among its previous sources): keep only the places copy 1 changes.
        self.spans: list[tuple[int, int, int]] | None = []
        shift = 0
        for start, stop, position, new in sorted(
            (start, start + len(_avro_scalar(old)), position, _avro_scalar(new))
            for position, (old, new) in enumerate(first_copy.items())
            for start in _occurrences(self.original, _avro_scalar(old))
        ):
            if expected[start + shift:start + shift + len(new)] == new:
                self.spans.append((start, stop, position))
                shift += len(new) - (stop - start)
        if self._patched(1) != expected:
            self.spans = None

    def _patched(self, copy: int) -> bytes:
        new_ids = list(_changed_ids(self.record, replicate(self.record, self.survey, copy)).values())
        parts, end = [], 0
        for start, stop, position in self.spans:
            parts += [self.original[end:start], _avro_scalar(new_ids[position])]
            end = stop
        return b"".join(parts) + self.original[end:]

    def copy(self, copy: int) -> bytes:
        if copy == 0:
            return self.original
        if self.spans is None:
            return encode(replicate(self.record, self.survey, copy), self.parsed_schema)
        return self._patched(copy)


def _occurrences(data: bytes, part: bytes) -> list[int]:
    found, start = [], data.find(part)
    while start >= 0:
        found.append(start)
        start = data.find(part, start + len(part))
    return found


def publish(
    producer_config: dict[str, Any],
    topic: str,
    paths: Iterable[str | Path],
    survey: Survey,
    copies: int = 1,
    rate: float | None = None,
    key: bytes | None = None,
    first_copy: int = 0,
) -> int:
    """Send every alert of the files `copies` times to `topic`; returns how many were sent.

    Parameters
    ----------
    producer_config
        confluent-kafka's producer settings (the broker's address, credentials).
    topic
        Where to send.
    paths
        Avro files of alerts, one or many alerts each.
    survey
        Whose alerts: which ids each copy gets anew.
    copies
        How many times each alert is sent.
    rate
        Alerts per second (None: as fast as the broker takes them).
    key
        Replaces the writer-schema key (e.g. b"2.7_3.10.1" for an old stream).
    first_copy
        The first copy's number: a later call starting where an earlier one ended sends new ids.
    """
    from confluent_kafka import Producer

    producer = Producer(
        {"linger.ms": 20, "message.max.bytes": 16 * 1024 * 1024, "logger": log, **producer_config}
    )
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    encoders = []
    for alerts in read_saved_alerts(paths):
        parsed = fastavro.parse_schema(json.loads(alerts.schema_text))
        message_key = key if key is not None else alerts.schema_text.encode("utf-8")
        encoders += [(message_key, ReplicaEncoder(record, parsed, survey)) for record in alerts.records]
    sent = 0
    started = time.monotonic()
    for copy in range(first_copy, first_copy + copies):
        for message_key, encoder in encoders:
            value = encoder.copy(copy)
            while True:
                try:
                    producer.produce(topic, value=value, key=message_key, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
            sent += 1
            if rate:
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    remaining = producer.flush(120)
    if remaining or failures:
        raise RuntimeError(
            f"{remaining + len(failures)} of {sent} alerts were not delivered to {topic}: "
            f"{failures[:3] or 'flush timed out'}"
        )
    log.info("published %d alerts to %s", sent, topic)
    return sent


def main(argv: list[str] | None = None) -> None:
    """Command line: publish saved alerts to a topic of a Kafka broker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="Avro files or folders of them")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--servers", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--survey", choices=sorted(SURVEYS), default="ztf")
    parser.add_argument("--username")
    parser.add_argument("--password-env", help="environment variable holding the password")
    parser.add_argument("--copies", type=int, default=1, help="send each alert this many times, with new ids")
    parser.add_argument("--rate", type=float, help="alerts per second (default: as fast as possible)")
    parser.add_argument("--version-key", help="send this version string as key instead of the schema")
    args = parser.parse_args(argv)
    import os

    config: dict[str, Any] = {"bootstrap.servers": args.servers}
    if args.username:
        config.update(
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "SCRAM-SHA-512",
                "sasl.username": args.username,
                "sasl.password": os.environ[args.password_env] if args.password_env else "",
            }
        )
    count = publish(
        config, args.topic, args.paths, SURVEYS[args.survey], args.copies, args.rate,
        args.version_key.encode() if args.version_key else None,
    )
    print(f"published {count} alerts to {args.topic}")


if __name__ == "__main__":
    main()
