"""Avro schemas: schema files, and the writer schemas that message keys name.

A Fink message's key is its writer schema as JSON, or (streams before 2023) a version
string naming a bundled schema file. Each message is decoded with its own writer
schema, resolved onto the output table's schema (`fink_spark.schema.table`), so that
one table holds alerts of several schema versions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

from fink_spark.errors import ConfigError
from fink_spark.surveys import Survey

VERSION_KEY = re.compile(r"^[0-9][0-9A-Za-z.]*_[0-9][0-9A-Za-z.]*(_replayed)?$")
# Java's Avro (Spark's from_avro) takes only these names; fastavro, and so Fink's writers, more.
JAVA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RENAMED_FROM = "fink_spark_renamed_from"  # a field's attribute: the writer's own name, which Java rejects
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


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


# Why a key names no writer schema: the same words whether the driver learns the key
# (`writer_schema_from_key`) or a micro-batch meets it first (`decode._reject_reason`).
NOT_A_SCHEMA_KEY = "is neither a JSON Avro schema nor a schema version string"
UNBUNDLED_VERSION = "which fink-spark does not bundle"


def writer_schema_from_key(key: bytes | None, survey: Survey) -> str:
    """The writer schema a message key names, or a SchemaKeyError saying why there is none."""
    kind = key_kind(key)
    if kind == "invalid" or key is None:
        shown = "no key" if not key else f"key {key[:60]!r}"
        raise SchemaKeyError(
            f"{shown} {NOT_A_SCHEMA_KEY}"
        )
    if kind == "version":
        version = key.decode("ascii")
        path = survey.schema_dir / survey.version_schema_pattern.format(version=version)
        if not path.exists():
            raise SchemaKeyError(
                f"key names schema version {version!r}, {UNBUNDLED_VERSION} "
                f"(no {path.name} in {survey.schema_dir}); add that file to decode these alerts"
            )
        return path.read_text()
    if len(key) > MAX_SCHEMA_BYTES:
        raise SchemaKeyError(f"key's schema is {len(key) / 1e6:.1f} MB; fink-spark decodes writer schemas up to "
                             f"{MAX_SCHEMA_BYTES / 1e6:.0f} MB (Fink's are about 40 kB)")
    try:
        text = key.decode("utf-8")
        depth = _depth(text)
        if depth > MAX_DEPTH:
            raise SchemaKeyError(f"key's schema nests {depth} levels deep; fink-spark decodes schemas up to "
                                 f"{MAX_DEPTH} levels (Spark's Avro reader recurses once per level)")
        schema = json.loads(text)
        parse_schema(schema)
    except SchemaKeyError:
        raise
    except Exception as error:  # noqa: BLE001 - RecursionError included
        raise SchemaKeyError(f"key is not a valid Avro schema: {error}") from error
    legal = java_legal(schema)
    return text if legal == schema else json.dumps(legal)


MAX_DEPTH = 200  # JSON levels of a writer schema; Fink's deepest are about 12
MAX_SCHEMA_BYTES = 1_000_000  # Fink's largest writer schemas are about 40 kB


def _depth(text: str) -> int:
    """How deep a JSON text nests, read before parsing it (json.loads itself gives up at
    about 1,000 levels, with a less helpful error)."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _legal_name(name: str, dotted: bool = True) -> str:
    """A name Java's Avro accepts, for a name it rejects (`2MASS_name` -> `_2MASS_name`,
    `flux-err` -> `flux_err`); the full name of a type part by part (a field's may not hold a dot)."""
    if dotted and "." in name:
        return ".".join(_legal_name(part) for part in name.split("."))
    if JAVA_NAME.match(name):
        return name
    legal = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return legal if JAVA_NAME.match(legal) else "_" + legal


def java_legal(schema: Any) -> Any:
    """The same schema with names Java's Avro accepts. Avro's binary encoding does not depend
    on names, so the writer's values decode the same: a field renamed (a name Java rejects,
    or one repeated in its record) keeps its own name in `fink_spark_renamed_from`, and the
    table's history says so. Named types and their references get the same new names."""
    if isinstance(schema, list):
        return [java_legal(branch) for branch in schema]
    if isinstance(schema, str):
        return schema if schema in PRIMITIVES else _legal_name(schema)
    if not isinstance(schema, dict):
        return schema
    legal = dict(schema)
    for key in ("name", "namespace"):
        if isinstance(schema.get(key), str) and schema[key]:
            legal[key] = _legal_name(schema[key])
    kind = schema.get("type")
    if kind in ("record", "error"):
        fields, seen = [], set()
        for item in schema.get("fields", []):
            name = base = _legal_name(item["name"], dotted=False)
            copy = 2
            while name in seen:  # a name repeated in its record: the second is <name>_2
                name, copy = f"{base}_{copy}", copy + 1
            seen.add(name)
            # A writer's defaults never take part in decoding, and Java rejects some that
            # fastavro takes (null for a union whose first branch is not null): left out.
            field_ = {**{k: v for k, v in item.items() if k != "default"}, "name": name, "type": java_legal(item["type"])}
            if name != item["name"]:
                field_[RENAMED_FROM] = item["name"]
            fields.append(field_)
        legal["fields"] = fields
    elif kind == "enum":
        legal["symbols"] = [_legal_name(symbol) for symbol in schema.get("symbols", [])]
    elif kind == "array":
        legal["items"] = java_legal(schema["items"])
    elif kind == "map":
        legal["values"] = java_legal(schema["values"])
    elif isinstance(kind, (dict, list)):
        legal["type"] = java_legal(kind)
    return legal


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

    def described(self) -> dict[str, str]:
        """Every writer schema known, by a short description of it for messages."""
        described = {f"topic {topic}'s schema": writer for topic, writer in self.by_topic.items()}
        for key, writer in self.known.items():
            name = json.loads(writer).get("name", "?")
            described[f"schema version {key.decode()}" if key_kind(key) == "version" else
                      f"writer schema {name} (fingerprint {schema_fingerprint(writer)})"] = writer
        return described

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

    def reject_unparsable(self, parse: Callable[[str], object]) -> None:
        """Move to `rejected` the known schemas that `parse` (Java's Avro parser) refuses, with
        its message: a writer schema Spark cannot use must cost its messages, not the job."""
        for key, text in list(self.known.items()):
            try:
                parse(text)
            except Exception as error:  # noqa: BLE001 - any refusal: the messages go to the quarantine
                message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                self.rejected[key] = f"Spark's Avro cannot parse the key's schema: {message}"
                del self.known[key]

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
