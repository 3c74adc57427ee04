"""Writer schemas as Fink's change between versions, built from a real one: fields removed,
added (at the top and nested), widened and retyped, with the real alerts' values carried
over (a retyped value is the same value in the new type; an added value is derived from
the alert's own fields)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Change = tuple[str, str, Any, Callable[[Any, dict], Any] | None]  # (operation, path, new type, value)


@dataclass
class Variant:
    """A writer schema derived from `base` by `changes`, and where each changed field is
    expected in the table (`columns`: writer path -> table path, for the retyped ones)."""

    name: str
    changes: list[Change]
    columns: dict[str, str] = field(default_factory=dict)

    def schema(self, base: dict) -> dict:
        schema = copy.deepcopy(base)
        schema["name"] = f"{schema['name']}_{self.name}"
        for operation, path, new_type, _ in self.changes:
            *parents, name = path.split(".")
            fields = _record(schema, parents)["fields"]
            if operation == "remove":
                fields[:] = [item for item in fields if item["name"] != name]
            elif operation == "add":
                fields.append({"name": name, "type": new_type})
            else:
                next(item for item in fields if item["name"] == name)["type"] = new_type
        return schema

    def record(self, alert: dict) -> dict:
        record = copy.deepcopy(alert)
        for operation, path, _, value in self.changes:
            *parents, name = path.split(".")
            for holder in _holders(record, parents):
                if operation == "remove":
                    holder.pop(name, None)
                elif operation == "add":
                    holder[name] = value(None, holder)  # type: ignore[misc]
                else:
                    holder[name] = None if holder.get(name) is None else value(holder[name], holder)  # type: ignore[misc]
        return record


def _record(schema: dict, parents: list[str]) -> dict:
    """The record schema at a path of field names (`name[]` for an array's items)."""
    record = schema
    for parent in parents:
        item = next(entry for entry in record["fields"] if entry["name"] == parent.removesuffix("[]"))
        kind = _bare(item["type"])
        record = _bare(kind["items"]) if parent.endswith("[]") else kind
    return record


def _bare(schema: Any) -> Any:
    return next(branch for branch in schema if branch != "null") if isinstance(schema, list) else schema


def _holders(record: dict, parents: list[str]) -> list[dict]:
    holders = [record]
    for parent in parents:
        inner: list[dict] = []
        for holder in holders:
            value = holder.get(parent.removesuffix("[]"))
            if value is None:
                continue
            inner += [item for item in value if item is not None] if parent.endswith("[]") else [value]
        holders = inner
    return holders


def nullable(kind: Any) -> list:
    return [kind, "null"]


TIMESTAMP = {"type": "long", "logicalType": "timestamp-micros"}


def as_datetime(text: str, _: dict) -> Any:
    from datetime import datetime, timezone

    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def as_json(value: Any, _: dict) -> str:
    return json.dumps(value, sort_keys=True)


def as_double(value: Any, _: dict) -> float:
    return float(value)


def same(value: Any, _: dict) -> Any:
    return value


ZTF_VARIANTS = [
    Variant("as_published", []),
    Variant("fields_removed", [
        ("remove", "finkclass", None, None), ("remove", "tnsclass", None, None),
        ("remove", "candidate.ssnamenr", None, None), ("remove", "prv_candidates[].magzpsci", None, None),
    ]),
    Variant("fields_added", [
        ("add", "fink_spark_candid_text", nullable("string"), lambda _, alert: str(alert["candid"])),
        ("add", "candidate.snr", nullable("double"), lambda _, c: None if c["sigmapsf"] in (None, 0) else c["magpsf"] / c["sigmapsf"]),
        ("add", "prv_candidates[].band", nullable("string"), lambda _, c: {1: "g", 2: "r", 3: "i"}.get(c["fid"])),
    ]),
    Variant("widened", [
        ("retype", "Plx", nullable("double"), same), ("retype", "roid", nullable("long"), same),
        ("retype", "candidate.magpsf", nullable("double"), same), ("retype", "candidate.fid", nullable("long"), same),
        ("retype", "prv_candidates[].magpsf", nullable("double"), same),
    ]),
    Variant("retyped", [
        ("retype", "timestamp", nullable(TIMESTAMP), as_datetime),
        ("retype", "is_transient", nullable("double"), as_double),
        ("retype", "mangrove", nullable("string"), as_json),
        ("retype", "candidate.isdiffpos", nullable("boolean"), lambda value, _: value in ("t", "1")),
        ("retype", "prv_candidates[].isdiffpos", nullable("boolean"), lambda value, _: value in ("t", "1")),
    ], columns={
        "timestamp": "timestamp__timestamp_micros", "is_transient": "is_transient__double",
        "mangrove": "mangrove__string", "candidate.isdiffpos": "candidate.isdiffpos__boolean",
        "prv_candidates[].isdiffpos": "prv_candidates[].isdiffpos__boolean",
    }),
]

LSST_VARIANTS = [
    Variant("as_published", []),
    Variant("fields_removed", [
        ("remove", "tns_type_recomputed", None, None), ("remove", "misc", None, None),
        ("remove", "diaSource.trailFlux", None, None), ("remove", "prvDiaSources[].ixx", None, None),
    ]),
    Variant("fields_added", [
        ("add", "fink_spark_source_text", nullable("string"), lambda _, alert: str(alert["diaSourceId"])),
        ("add", "diaSource.psfSnr", nullable("double"), lambda _, s: None if not s["psfFluxErr"] else s["psfFlux"] / s["psfFluxErr"]),
    ]),
    Variant("widened", [
        ("retype", "diaSource.psfFlux", nullable("double"), same), ("retype", "diaSource.detector", nullable("long"), same),
        ("retype", "prvDiaSources[].psfFlux", nullable("double"), same),
    ]),
    Variant("retyped", [
        ("retype", "timestamp", nullable(TIMESTAMP), as_datetime),
        ("retype", "diaSource.isNegative", nullable("double"), as_double),
        ("retype", "pred", nullable("string"), as_json),
    ], columns={
        "timestamp": "timestamp__timestamp_micros", "diaSource.isNegative": "diaSource.isNegative__double",
        "pred": "pred__string",
    }),
]


def expected_alert(alert: dict, columns: dict[str, str]) -> dict:
    """An alert as the table holds it: retyped fields moved to the columns the rule names."""
    moved = copy.deepcopy(alert)
    for source, target in columns.items():
        *parents, name = source.split(".")
        new_name = target.rsplit(".", 1)[-1]
        for holder in _holders(moved, parents):
            if name in holder:
                holder[new_name] = holder.pop(name)
    return moved
