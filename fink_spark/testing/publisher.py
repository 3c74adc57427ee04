"""Replay saved alerts into a Kafka topic the way Fink publishes them.

Value: one schemaless Avro datum per message (no container header, no magic byte).
Key: the writer schema as JSON, or a version string as older Fink streams had.
For volume, each alert can be sent several times with new ids (and, to spread them on
the sky and over nights, moved by a rotation and shifted in time); for a live stream, at a
steady rate.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import re
import string
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import fastavro

from fink_spark.surveys import SURVEYS, Survey, value_at

log = logging.getLogger(__name__)

ID_STRIDE = 10**12
_LETTERS = string.ascii_lowercase
POSITION_PAIRS = (("ra", "dec"), ("ranr", "decnr"))  # (ra, dec) of a source, of its reference (ZTF)
TIMES = {  # fields holding a time in days, by survey
    "ztf": re.compile(r"jd|jd(start|end)(hist|ref)|jd_first_real_det"),
    "lsst": re.compile(r".*Mjd.*|epoch_mjd"),
}
LeafPath = tuple[str | int, ...]


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


def _rotation(copy: int) -> tuple[tuple[float, ...], ...]:
    """A rotation of the sky for each copy: Euler angles z-y-z from fractions of irrational
    multiples, so that copies spread evenly over the sphere."""
    alpha = 2 * math.pi * (copy * 0.6180339887498949 % 1)
    beta = math.acos(1 - 2 * (copy * 0.4142135623730951 % 1))
    gamma = 2 * math.pi * (copy * 0.7320508075688772 % 1)
    ca, sa, cb, sb, cg, sg = (f(angle) for angle in (alpha, beta, gamma) for f in (math.cos, math.sin))
    return ((ca * cb * cg - sa * sg, -ca * cb * sg - sa * cg, ca * sb),
            (sa * cb * cg + ca * sg, -sa * cb * sg + ca * cg, sa * sb),
            (-sb * cg, sb * sg, cb))


def _rotated(ra: float, dec: float, rotation: tuple[tuple[float, ...], ...]) -> tuple[float, float]:
    """(ra, dec) in degrees turned by a rotation."""
    ra_rad, dec_rad = math.radians(ra), math.radians(dec)
    vector = (math.cos(dec_rad) * math.cos(ra_rad), math.cos(dec_rad) * math.sin(ra_rad), math.sin(dec_rad))
    x, y, z = (sum(a * b for a, b in zip(row, vector)) for row in rotation)
    return math.degrees(math.atan2(y, x)) % 360.0, math.degrees(math.asin(max(-1.0, min(1.0, z))))


def _relocated(value: Any, rotation: tuple[tuple[float, ...], ...] | None, days: float, times: re.Pattern[str]) -> Any:
    """`value` with every position pair at any depth turned and every time shifted; what
    does not change is shared, so that a changed leaf is one that is not the same object."""
    if isinstance(value, list):
        items = [_relocated(item, rotation, days, times) for item in value]
        return value if all(new is old for new, old in zip(items, value)) else items
    if not isinstance(value, dict):
        return value
    changed = {}
    for name, item in value.items():
        if isinstance(item, dict | list):
            new = _relocated(item, rotation, days, times)
            if new is not item:
                changed[name] = new
        elif days and isinstance(item, float) and times.fullmatch(name):
            changed[name] = item + days
    if rotation is not None:
        for ra_name, dec_name in POSITION_PAIRS:
            ra, dec = value.get(ra_name), value.get(dec_name)
            if isinstance(ra, float) and isinstance(dec, float):
                changed[ra_name], changed[dec_name] = _rotated(ra, dec, rotation)
    return {**value, **changed} if changed else value


def replicate(record: dict[str, Any], survey: Survey, copy: int, moved: bool = False, days: float = 0.0) -> dict[str, Any]:
    """A copy of a real alert with new ids (copy 0 is the alert itself).

    Every copy of the alert id (`Survey.id_copies`: candid and candidate.candid,
    diaSourceId and diaSource.diaSourceId) moves by copy x 10^12; an object id that is a
    name (ZTF's 'ZTF26aamcbly') gets new last letters, a numeric one stays. `moved`: every
    position inside the alert (its source, previous sources, object, reference) is turned
    by the copy's own rotation of the sky, so that separations within it stay as observed.
    `days`: every time inside it is shifted by that many days.
    """
    clone = record
    if copy:
        for path in survey.id_copies:
            value = value_at(record, path)
            if value is not None:
                clone = _with_value(clone, path, value + copy * ID_STRIDE)
        object_id = value_at(record, survey.object_column)
        if isinstance(object_id, str):
            clone = _with_value(clone, survey.object_column, object_id[:5] + _object_suffix(copy, len(object_id) - 5))
    if (moved and copy) or days:
        clone = _relocated(clone, _rotation(copy) if moved and copy else None, days, TIMES[survey.name])
    return clone


def encode(record: dict[str, Any], parsed_schema: Any) -> bytes:
    """One schemaless Avro datum."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed_schema, record)
    return buffer.getvalue()


def _avro_scalar(value: int | float | str) -> bytes:
    """The Avro encoding of a long (zig-zag varint), a double (8 bytes, little-endian) or a
    string (length, then UTF-8)."""
    if isinstance(value, str):
        data = value.encode("utf-8")
        return _avro_scalar(len(data)) + data
    if isinstance(value, float):
        return struct.pack("<d", value)
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _changed_leaves(original: Any, copy: Any, path: LeafPath = ()) -> Iterator[tuple[LeafPath, Any]]:
    """(path, old value) of every value `replicate` changed. It shares every value it keeps
    (the same object): only records and lists that are new are looked into."""
    if copy is original:
        return
    if isinstance(original, dict):
        for name, value in original.items():
            yield from _changed_leaves(value, copy[name], (*path, name))
    elif isinstance(original, list):
        for index, value in enumerate(original):
            yield from _changed_leaves(value, copy[index], (*path, index))
    else:
        yield path, original


def _at(record: Any, path: LeafPath) -> Any:
    return reduce(lambda value, key: value[key], path, record)


class ReplicaEncoder:
    """Encoded copies of one real alert with new ids, without encoding the whole alert again.

    Avro has no offsets: an alert's bytes are its fields' bytes one after the other, so a
    copy is the original's bytes with each changed value's encoding swapped for the new
    one's (an id, and with `moved` every position and time, each a double of 8 bytes).
    Encoding a Fink alert with fastavro takes about 10 ms (its unions are checked field by
    field); swapping takes far less. Where the values are is checked once against a full
    encoding of copy 1 (moved: and shifted by a day); if the check fails, every copy is
    fully encoded.
    """

    def __init__(self, record: dict[str, Any], parsed_schema: Any, survey: Survey, moved: bool = False) -> None:
        self.record, self.parsed_schema, self.survey, self.moved = record, parsed_schema, survey, moved
        self.original = encode(record, parsed_schema)
        copy_1 = replicate(record, survey, 1, moved, 1.0 if moved else 0.0)
        leaves = list(_changed_leaves(record, copy_1))
        self.paths = [path for path, _ in leaves]
        expected = encode(copy_1, parsed_schema)
        # A value's bytes may also stand where `replicate` keeps it (e.g. an LSST alert's
        # own source among its previous sources, or bytes inside another value): keep only
        # the places copy 1 changes.
        self.spans: list[tuple[int, int, int]] | None = []
        shift, end = 0, 0
        for start, stop, position, new in sorted(
            (start, start + len(old_bytes), position, _avro_scalar(_at(copy_1, path)))
            for position, (path, old) in enumerate(leaves)
            for old_bytes in [_avro_scalar(old)]
            for start in _occurrences(self.original, old_bytes)
        ):
            if start >= end and expected[start + shift:start + shift + len(new)] == new:
                self.spans.append((start, stop, position))
                shift += len(new) - (stop - start)
                end = stop
        if self._patched(1, 1.0 if moved else 0.0) != expected:
            self.spans = None

    def _patched(self, copy: int, days: float) -> bytes:
        replica = replicate(self.record, self.survey, copy, self.moved, days)
        parts, end = [], 0
        for start, stop, position in self.spans:
            parts += [self.original[end:start], _avro_scalar(_at(replica, self.paths[position]))]
            end = stop
        return b"".join(parts) + self.original[end:]

    def copy(self, copy: int, days: float = 0.0) -> bytes:
        """Copy number `copy`; an encoder of moved copies also shifts its times by `days`."""
        if days and not self.moved:
            raise ValueError("only an encoder of moved copies (moved=True) shifts times")
        if copy == 0 and not days:
            return self.original
        if self.spans is None:
            return encode(replicate(self.record, self.survey, copy, self.moved, days), self.parsed_schema)
        return self._patched(copy, days)


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
