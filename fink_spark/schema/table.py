"""The output table's schema: the writer schemas met so far, merged into one, with its history.

Fink's writer schemas change between versions: fields come and go, records grow, types
change. The table keeps every value of every alert by one rule:

- a field met for the first time is added at the end of its record (rows written
  without it read null), at any depth;
- int -> long and float -> double widen the column in place (Spark reads the narrower
  values of older files as the wider type when given the table's schema);
- any other change of type (string vs timestamp, boolean vs double, record vs scalar,
  ...) leaves the column as it is and adds a sibling column `<name>__<type>` that holds
  the values of the writers of that type, so that no value is converted or dropped.

Each writer schema then gets its own reader schema (`reader_for`): the table's schema,
with Avro aliases that send the writer's retyped fields to their sibling columns. Every
reader gives Spark the same struct, so that one `from_avro` per writer fills one table.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any

from fastavro.schema import expand_schema
from pyspark.sql.types import (
    ArrayType,
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    StructField,
    StructType,
)

from fink_spark.errors import ConfigError
from fink_spark.schema.writer import RENAMED_FROM
from fink_spark.state import OUTPUT_TABLE_SCHEMA, TABLE_SCHEMA, CheckpointFiles

WIDENINGS = {("int", "long"): "long", ("float", "double"): "double"}

SIBLING = "__"

NAMED = ("record", "enum", "fixed")


def nullable(schema: Any) -> Any:
    """A field type that also admits null, with null first so that null can be the default."""
    if isinstance(schema, list):
        return ["null", *[branch for branch in schema if branch != "null"]]
    if schema == "null":
        return schema
    return ["null", schema]


def lenient(schema: Any) -> Any:
    if isinstance(schema, list):
        return [lenient(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind == "record":
        fields = [
            {
                **{key: value for key, value in item.items() if key != "default"},
                "type": nullable(lenient(item["type"])),
                "default": None,
            }
            for item in schema["fields"]
        ]
        return {**schema, "fields": fields}
    if kind == "array":
        return {**schema, "items": lenient(schema["items"])}
    if kind == "map":
        return {**schema, "values": lenient(schema["values"])}
    return schema


def _bare(schema: Any) -> tuple[Any, bool]:
    """A type without its null branch, and whether it had one."""
    if isinstance(schema, list) and "null" in schema:
        others = [branch for branch in schema if branch != "null"]
        if len(others) == 1:
            return others[0], True
        return others, True
    return schema, False


def kind(schema: Any) -> str:
    """A short name of a type, as it appears in sibling column names: `string`, `double`,
    `timestamp_micros`, `record`, `array`..."""
    bare, _ = _bare(schema)
    if isinstance(bare, list):
        return "union"
    if isinstance(bare, dict):
        logical = bare.get("logicalType")
        return (logical or bare["type"]).replace("-", "_")
    return bare


def _essence(schema: Any) -> str:
    """A type's identity for equality, documentation and names aside."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("doc", "name", "namespace", "aliases", "default")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(schema), sort_keys=True)


class _Merge:
    """One writer schema merged into the table's: the new table schema and what changed."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self.widened: list[str] = []
        self.siblings: list[str] = []
        self.renamed: list[str] = []

    def type(self, table: Any, writer: Any, path: str) -> Any | None:
        """The table type that holds both, or None if the writer's values need a sibling column."""
        table_bare, table_null = _bare(table)
        writer_bare, _ = _bare(writer)
        table_kind, writer_kind = kind(table_bare), kind(writer_bare)
        wrap = nullable if table_null else (lambda t: t)
        if table_kind == writer_kind == "record":
            return wrap(self.record(table_bare, writer_bare, path))
        if table_kind == writer_kind == "array":
            items = self.type(table_bare["items"], writer_bare["items"], path + "[]")
            return None if items is None else wrap({**table_bare, "items": items})
        if table_kind == writer_kind == "map":
            values = self.type(table_bare["values"], writer_bare["values"], path + "{}")
            return None if values is None else wrap({**table_bare, "values": values})
        exact_kinds = (*NAMED, "union", "decimal")  # same kind, but still possibly different types
        if table_kind == writer_kind and (table_kind not in exact_kinds or _essence(table_bare) == _essence(writer_bare)):
            return table
        if (writer_kind, table_kind) in WIDENINGS:
            return table  # the table's type is already the wider one
        if (table_kind, writer_kind) in WIDENINGS:
            self.widened.append(f"{path} {table_kind}->{writer_kind}")
            return wrap(writer_bare)
        return None

    def record(self, table: dict, writer: dict, path: str) -> dict:
        fields = [dict(item) for item in table["fields"]]
        for item in writer["fields"]:
            target, merged = _target(fields, item["name"], item["type"], self, path)
            where = f"{path}.{target}" if path else target
            if merged is None:
                fields.append({"name": target, "type": nullable(lenient(item["type"])), "default": None})
                self.renamed += _renamed({"type": "record", "name": "-", "fields": [item]}, path)
                if target == item["name"]:
                    self.added.append(where)
                else:
                    self.siblings.append(where)
            else:
                fields = [{**entry, "type": merged} if entry["name"] == target else entry for entry in fields]
        return {**table, "fields": fields}


def _target(fields: list[dict], name: str, writer_type: Any, merge: _Merge, path: str) -> tuple[str, Any | None]:
    """The table column a writer field goes to, and its merged type (None: a new column)."""
    by_name = {entry["name"]: entry for entry in fields}
    candidates = [name, f"{name}{SIBLING}{kind(writer_type)}"]
    candidates += [f"{candidates[1]}_{n}" for n in range(2, 10)]
    for candidate in candidates:
        if candidate not in by_name:
            return candidate, None
        trial = _Merge()
        where = f"{path}.{candidate}" if path else candidate
        if trial.type(by_name[candidate]["type"], writer_type, where) is not None:
            return candidate, merge.type(by_name[candidate]["type"], writer_type, where)
    raise ValueError(f"{path}.{name}: too many incompatible types")


def _reader_record(table: dict, writer: dict | None, names: dict[str, int]) -> dict:
    """The table's record as a reader of `writer`'s: writer records' names (Avro matches
    field aliases by record name), aliases to sibling columns, unique names elsewhere."""
    fields = [dict(item) for item in table["fields"]]
    writer_types: dict[str, Any] = {}
    if writer is not None:
        for item in writer["fields"]:
            target, _ = _target(table["fields"], item["name"], item["type"], _Merge(), "")
            writer_types[target] = item["type"]
            if target != item["name"]:
                fields = [{**entry, "aliases": [item["name"]]} if entry["name"] == target else entry for entry in fields]
    fields = [{**entry, "type": _reader_type(entry["type"], writer_types.get(entry["name"]), names)} for entry in fields]
    name = writer["name"] if writer is not None else "fink_spark_unmatched"
    names[name] = names.get(name, 0) + 1
    if names[name] > 1:
        name = f"{name}_{names[name]}"
    return {**table, "name": name, "fields": fields}


def _reader_type(table: Any, writer: Any, names: dict[str, int]) -> Any:
    table_bare, optional = _bare(table)
    writer_bare = _bare(writer)[0] if writer is not None else None
    wrap = nullable if optional else (lambda t: t)
    if isinstance(table_bare, dict):
        same = writer_bare if isinstance(writer_bare, dict) and writer_bare.get("type") == table_bare["type"] else None
        if table_bare["type"] == "record":
            return wrap(_reader_record(table_bare, same, names))
        if table_bare["type"] == "array":
            return wrap({**table_bare, "items": _reader_type(table_bare["items"], same and same["items"], names)})
        if table_bare["type"] == "map":
            return wrap({**table_bare, "values": _reader_type(table_bare["values"], same and same["values"], names)})
        if table_bare["type"] in NAMED:
            name = same["name"] if same else f"fink_spark_unmatched_{table_bare['name'].replace('.', '_')}"
            return wrap({**table_bare, "name": name})
    return table


def _record_in(schema: Any) -> dict | None:
    """The record a type holds: itself, or its array's items (none for other types)."""
    bare, _ = _bare(schema)
    if isinstance(bare, dict) and bare.get("type") == "array":
        bare, _ = _bare(bare["items"])
    return bare if isinstance(bare, dict) and bare.get("type") == "record" else None


def _renames(table: dict, writer: dict) -> dict[str, tuple[str, dict]]:
    renames = {}
    for item in writer["fields"]:
        target, _ = _target(table["fields"], item["name"], item["type"], _Merge(), "")
        table_type = next(entry["type"] for entry in table["fields"] if entry["name"] == target)
        inner = (_record_in(table_type), _record_in(item["type"]))
        renames[item["name"]] = (target, _renames(*inner) if inner[0] and inner[1] else {})  # type: ignore[arg-type]
    return renames


@dataclass
class TableSchema:
    """The table's Avro schema (every field nullable) and the history of its changes."""

    schema: dict
    history: list[dict] = field(default_factory=list)

    @classmethod
    def first(cls, writer_text: str, source: str) -> TableSchema:
        schema = lenient(expand_schema(json.loads(writer_text)))
        entry = {"at": source, "time": _now(), "started_from": schema.get("name")}
        renamed = _renamed(schema, "")
        if renamed:
            entry["renamed"] = renamed
        return cls(schema, [entry])

    def merge(self, writer_text: str, source: str) -> str | None:
        """Take in a writer schema; returns what changed as one line, or None if nothing did."""
        merge = _Merge()
        merged = merge.record(self.schema, expand_schema(json.loads(writer_text)), "")
        if not (merge.added or merge.widened or merge.siblings):
            return None
        self.schema = merged
        entry = {"at": source, "time": _now(), "added": merge.added, "widened": merge.widened,
                 "siblings": merge.siblings}
        if merge.renamed:
            entry["renamed"] = merge.renamed
        self.history.append(entry)
        parts = [f"{label} {', '.join(entry[key])}" for key, label in
                 (("added", "added"), ("widened", "widened"), ("siblings", "retyped into new columns"),
                  ("renamed", "named for Java")) if entry.get(key)]
        return "; ".join(parts)

    def reader_for(self, writer_text: str) -> str:
        """The reader schema that decodes this writer's values into the table's struct."""
        writer = expand_schema(json.loads(writer_text))
        return json.dumps(_reader_record(copy.deepcopy(self.schema), writer, {}))

    def renames_for(self, writer_text: str) -> dict[str, tuple[str, dict]]:
        """Where each of a writer's fields goes in the table (its own name, or a sibling
        column), at every depth: {field: (table column, the same for its fields)}. For data
        decoded already (Parquet), which Avro aliases cannot route."""
        return _renames(self.schema, expand_schema(json.loads(writer_text)))

    def table_reader(self) -> str:
        """The table's schema as a reader of itself (e.g. for files already in its shape)."""
        return self.reader_for(json.dumps(self.schema))

    @classmethod
    def from_json(cls, text: str) -> TableSchema:
        saved = json.loads(text)
        return cls(saved["schema"], saved["history"])


def _renamed(schema: Any, path: str) -> list[str]:
    """The fields of a (lenient) schema that stand for writer fields Java's Avro rejects."""
    record = _record_in(schema)
    found = []
    for item in record["fields"] if record else []:
        where = f"{path}.{item['name']}" if path else item["name"]
        if RENAMED_FROM in item:
            found.append(f"{where} (the writer's {item[RENAMED_FROM]!r}, a name Java's Avro rejects)")
        found += _renamed(item["type"], where)
    return found


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def save_table_schema(table: TableSchema, columns: StructType, state: CheckpointFiles, output: str | None) -> str | None:
    """Keep the table's schema, its history and its Spark columns beside the checkpoint (and, for
    a Parquet output, in its folder `output`: its readers need them), before any file of that
    schema is written. Returns the history's entries since the last save, as JSON (None if none)."""
    saved = state.read(TABLE_SCHEMA)
    known = len(json.loads(saved)["history"]) if saved else 0
    text = json.dumps({"schema": table.schema, "history": table.history, "spark_schema": columns.jsonValue()}, indent=1)
    state.write(TABLE_SCHEMA, text)
    if output is not None:
        CheckpointFiles.at(output).write(OUTPUT_TABLE_SCHEMA, text)
    return json.dumps(table.history[known:]) if table.history[known:] else None


# The same widenings as the table's (WIDENINGS), between Spark's types
_SPARK_TYPES = {"int": IntegerType(), "long": LongType(), "float": FloatType(), "double": DoubleType()}

SPARK_WIDENINGS = {frozenset({_SPARK_TYPES[narrow], _SPARK_TYPES[wide]}): _SPARK_TYPES[wide] for narrow, wide in WIDENINGS}


def widest(have: DataType, other: DataType, where: str) -> DataType:
    """One Spark type for two files' columns: fields of both, int and float widened."""
    if have == other:
        return have
    if isinstance(have, StructType) and isinstance(other, StructType):
        fields = [StructField(field.name, widest(field.dataType, other[field.name].dataType, where)
                              if field.name in other.names else field.dataType) for field in have.fields]
        return StructType(fields + [field for field in other.fields if field.name not in have.names])
    if isinstance(have, ArrayType) and isinstance(other, ArrayType):
        return ArrayType(widest(have.elementType, other.elementType, where))
    if isinstance(have, MapType) and isinstance(other, MapType) and have.keyType == other.keyType:
        return MapType(have.keyType, widest(have.valueType, other.valueType, where))
    widened = SPARK_WIDENINGS.get(frozenset({have, other}))
    if widened is None:
        raise ConfigError(f"{where} holds a column of type {other.simpleString()} where other files have "
                          f"{have.simpleString()}: Spark cannot read both in one folder; reprocess the files "
                          "of each type as separate inputs.")
    return widened
