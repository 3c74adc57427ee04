"""Avro schemas: schema files, and the writer schemas that message keys name.

A Fink message's key is its writer schema as JSON, or (streams before 2023) a version
string naming a bundled schema file. Each message is decoded with its own writer
schema, resolved onto the output table's schema (`fink_spark.table_schema`), so that
one table holds alerts of several schema versions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

from fink_spark.errors import ConfigError
from fink_spark.surveys import Survey

VERSION_KEY = re.compile(r"^[0-9][0-9A-Za-z.]*_[0-9][0-9A-Za-z.]*(_replayed)?$")


class SchemaKeyError(ValueError):
    """A message key that names no usable writer schema."""


def load_schema_text(path: str | Path) -> str:
    """Read an .avsc file, checking that it is a valid Avro schema."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise FileNotFoundError(f"Cannot read the schema file {path}: {error.strerror}") from error
    try:
        parse_schema(json.loads(text))
    except Exception as error:  # noqa: BLE001 - any parse failure means the same to the user
        raise ConfigError(f"{path} is not a valid Avro schema ({error}): fix it, or drop 'schema:' to use the "
                          "topics' own writer schemas.") from None
    return text


def schema_fingerprint(schema_text: str) -> str:
    """The Avro CRC-64 fingerprint of a schema's canonical form, in hex."""
    canonical = to_parsing_canonical_form(parse_schema(json.loads(schema_text)))
    return str(avro_fingerprint(canonical, "CRC-64-AVRO"))


def key_kind(key: bytes | None) -> str:
    """'json', 'version' or 'invalid': what a message key looks like."""
    if not key:
        return "invalid"
    stripped = key.lstrip()
    if stripped.startswith(b"{"):
        return "json"
    try:
        text = key.decode("ascii")
    except UnicodeDecodeError:
        return "invalid"
    return "version" if VERSION_KEY.match(text) else "invalid"


def writer_schema_from_key(key: bytes | None, survey: Survey) -> str:
    """The writer schema a message key names, or a SchemaKeyError saying why there is none."""
    kind = key_kind(key)
    if kind == "invalid" or key is None:
        shown = "no key" if not key else f"key {key[:60]!r}"
        raise SchemaKeyError(
            f"{shown} is neither a JSON Avro schema nor a schema version string"
        )
    if kind == "version":
        version = key.decode("ascii")
        path = survey.schema_dir / survey.version_schema_pattern.format(version=version)
        if not path.exists():
            raise SchemaKeyError(
                f"key names schema version {version!r}, which fink-spark does not bundle "
                f"(no {path.name} in {survey.schema_dir}); add that file to decode these alerts"
            )
        return path.read_text()
    try:
        text = key.decode("utf-8")
        parse_schema(json.loads(text))
    except Exception as error:  # noqa: BLE001
        raise SchemaKeyError(f"key is not a valid Avro schema: {error}") from error
    return text


@dataclass
class WriterSchemas:
    """The writer schemas known to a running job, by exact message key.

    `known` maps a key to the writer schema it names; `rejected` maps a key to the
    reason it names none. Both grow while the job runs, and are saved beside the
    checkpoint so that a restarted job knows them from the start. `by_topic` holds the
    schemas of Data Transfer topics, whose messages do not carry it in their key.
    """

    survey: Survey
    known: dict[bytes, str] = field(default_factory=dict)
    rejected: dict[bytes, str] = field(default_factory=dict)
    by_topic: dict[str, str] = field(default_factory=dict)

    def learn(self, key: bytes) -> bool:
        """Add a key's schema (or the reason it has none). True if the key was new."""
        if key in self.known or key in self.rejected:
            return False
        try:
            self.known[key] = writer_schema_from_key(key, self.survey)
        except SchemaKeyError as error:
            self.rejected[key] = str(error)
        return True

    def to_json(self) -> str:
        return json.dumps({
            "known": [[key.hex(), schema] for key, schema in self.known.items()],
            "rejected": [[key.hex(), reason] for key, reason in self.rejected.items()],
        })

    def add_json(self, text: str) -> None:
        """Know what `to_json` wrote (by an earlier run of the job)."""
        entries = json.loads(text)
        self.known.update({bytes.fromhex(key): schema for key, schema in entries["known"]})
        self.rejected.update({bytes.fromhex(key): why for key, why in entries["rejected"]})

    def bundled_versions(self) -> dict[bytes, str]:
        """The version-string keys whose schema file is bundled for the survey, with the schema.
        They are learned, like JSON keys, when a message with one is met."""
        prefix, suffix = self.survey.version_schema_pattern.split("{version}")
        versions = {}
        for path in sorted(self.survey.schema_dir.glob(f"{prefix}*{suffix}")):
            version = path.name[len(prefix) : len(path.name) - len(suffix)]
            if VERSION_KEY.match(version):
                versions[version.encode("ascii")] = path.read_text()
        return versions
