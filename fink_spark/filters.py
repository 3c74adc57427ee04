"""Column-level filters: Spark SQL conditions over the alert's columns, run in the JVM.

A filter is either a Spark SQL expression (`candidate.magpsf < 19.5`) or a named
preset with parameters (`{preset: cone, ra: 10, dec: -45, radius: 0.5}`). An alert
is kept if it passes every filter; a condition that is null (a missing value) rejects
it. The same `apply_filters` serves the live stream and reprocessing.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StructType

from fink_spark.decode import INGEST_TIME, METADATA_COLUMNS, NIGHT_COLUMNS
from fink_spark.errors import ConfigError
from fink_spark.keys import Section
from fink_spark.surveys import JD_MINUS_MJD, Survey

# The fink-filters and fink-utils releases whose conditions the presets follow; the tests
# run those releases' own code on the same alerts (tests/test_fink_filters.py).
FINK_FILTERS_VERSION, FINK_UTILS_VERSION = "7.45", "0.79.0"

# SIMBAD classes compatible with a host galaxy, as Fink defines them (fink-utils,
# xmatch.simbad.return_list_of_eg_host): unknown or failed cross-matches, supernovae,
# galaxies, AGN and clusters of galaxies.
EXTRAGALACTIC_CLASSES = (
    "Unknown", "Candidate_SN*", "SN*_Candidate", "SN", "Transient", "Fail", "Fail 504",
    "galaxy", "Galaxy", "EmG", "Seyfert", "Seyfert_1", "Seyfert_2", "BlueCompG", "StarburstG",
    "LSB_G", "HII_G", "High_z_G", "GinPair", "GinGroup", "BClG", "GinCl", "PartofG",
    "Compact_Gr_G", "IG", "PairG", "GroupG", "ClG", "SuperClG", "Void",
    "LINER", "Possible_ClG", "Possible_SClG", "GravLens_Candidate",
)


def above(column: str, value: float, inclusive: bool = False) -> str:
    """`column > value` (or >=) as Fink's pandas code means it: NaN is above nothing.

    Spark orders NaN above every number, so `NaN > 0.5` is true there; in pandas it is
    false. Null stays null (rejected) either way.
    """
    return f"({column} {'>=' if inclusive else '>'} {value!r} AND NOT isnan({column}))"


@dataclass(frozen=True)
class Filter:
    """One condition an alert must meet; `label` names it in messages."""

    label: str
    condition: str


def _mjd(value: Any, where: str) -> float:
    """A time given as an ISO date, a JD or an MJD, as MJD."""
    if isinstance(value, (date, datetime)) or isinstance(value, str):
        try:
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        except ValueError as error:
            raise ConfigError(f"{where} must be an ISO date, a JD or an MJD, not {value!r}.") from error
        if isinstance(moment, datetime) and moment.tzinfo is not None:
            moment = moment.replace(tzinfo=None) - moment.utcoffset()  # type: ignore[operator]
        days = (moment - datetime(1858, 11, 17)).total_seconds() / 86400
        return days
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be an ISO date, a JD or an MJD, not {value!r}.")
    return float(value) - JD_MINUS_MJD if value > JD_MINUS_MJD else float(value)


def _range(column: str | None, params: Section, survey: Survey, what: str) -> str:
    if column is None:
        raise ConfigError(f"{params.path}: the {what} preset does not apply to {survey.label} alerts.")
    low, high = params.optional("min"), params.optional("max")
    if low is None and high is None:
        raise ConfigError(f"{params.path}: give min, max or both.")
    parts = ([above(column, low, inclusive=True)] if low is not None else []) + ([f"{column} <= {high!r}"] if high is not None else [])
    return " AND ".join(parts)


def _params(item: dict[str, Any], where: str, known: set[str]) -> Section:
    """A preset's parameters (`preset` and those in `known`), read with errors that name `filters[i].key`."""
    return Section(item, where, known | {"preset"})


def _preset(item: dict[str, Any], survey: Survey, where: str) -> Filter:
    name = item.get("preset")
    columns = survey.filters
    if name == "not_sso":
        params = _params(item, where, {"radius"} if columns.not_sso_takes_radius else set())
        radius = params.number("radius", default=5.0, low=0) if columns.not_sso_takes_radius else 0
        return Filter(f"{where} (not_sso)", columns.not_sso.format(radius=radius))
    if name == "cone":
        params = _params(item, where, {"ra", "dec", "radius"})
        ra, dec = params.number("ra", low=0, high=360), params.number("dec", low=-90, high=90)
        radius = params.number("radius", low=0, high=180)
        # Haversine: right at the poles and across ra = 0.
        distance = (
            f"2 * asin(sqrt(pow(sin(radians({columns.dec} - {dec!r}) / 2), 2) + cos(radians({columns.dec}))"
            f" * cos(radians({dec!r})) * pow(sin(radians({columns.ra} - {ra!r}) / 2), 2)))"
        )
        return Filter(f"{where} (cone)", f"degrees({distance}) <= {radius!r}")
    if name == "time_window":
        params = _params(item, where, {"start", "end"})
        bounds = []
        if "start" in item:
            bounds.append(f"({survey.mjd_expression}) >= {_mjd(item['start'], where + '.start')!r}")
        if "end" in item:
            bounds.append(f"({survey.mjd_expression}) < {_mjd(item['end'], where + '.end')!r}")
        if not bounds:
            raise ConfigError(f"{where}: give start, end or both.")
        return Filter(f"{where} (time_window)", " AND ".join(bounds))
    if name == "magnitude":
        return Filter(f"{where} (magnitude)", _range(columns.magnitude, _params(item, where, {"min", "max"}), survey, "magnitude"))
    if name == "flux":
        return Filter(f"{where} (flux)", _range(columns.flux, _params(item, where, {"min", "max"}), survey, "flux"))
    if name == "min_reliability":
        params = _params(item, where, {"value"})
        value = params.number("value", low=0, high=1)
        return Filter(f"{where} (min_reliability)", above(columns.reliability, value, inclusive=True))
    if name == "extragalactic":
        _params(item, where, set())
        return Filter(f"{where} (extragalactic)", _extragalactic(columns.cross_match))
    if name in LIVESTREAM:
        _params(item, where, set())
        if not columns.livestream:
            raise ConfigError(f"{where}: the {name} preset is one of Fink's ZTF livestream topics; "
                              f"it does not apply to {survey.label} alerts.")
        return Filter(f"{where} ({name})", LIVESTREAM[name].format(extragalactic=_extragalactic(columns.cross_match)))
    known = ", ".join(sorted(PRESETS))
    raise ConfigError(f"{where}.preset is {name!r}; known presets: {known}.")


def _extragalactic(column: str) -> str:
    classes = ", ".join("'" + label.replace("'", "''") + "'" for label in EXTRAGALACTIC_CLASSES)
    return f"{column} IN ({classes})"


# The conditions of Fink's ZTF livestream topics, as fink-filters publishes them
# (fink_filters/ztf/livestream/filter_*/filter.py), as Spark SQL.
_SN_LIKE = (
    f"({above('snn_snia_vs_nonia', 0.5)} OR {above('snn_sn_vs_all', 0.5)}) AND {{extragalactic}}"
    f" AND {above('candidate.drb', 0.5)} AND {above('candidate.classtar', 0.4)}"
)
LIVESTREAM = {
    "early_sn_candidate": _SN_LIKE + f" AND candidate.ndethist <= 20 AND {above('rf_snia_vs_nonia', 0.5)}",
    "sn_candidate": _SN_LIKE + " AND candidate.jd - candidate.jdstarthist <= 90"
    " AND candidate.ndethist > 1 AND coalesce(roid, 0) != 3",
    "kn_candidate": f"{above('rf_kn_vs_nonkn', 0.5)} AND {above('candidate.drb', 0.5)} AND {above('candidate.classtar', 0.4)}"
    " AND candidate.jd - candidate.jdstarthist < 5 AND candidate.ndethist < 20"
    " AND coalesce(roid, 0) != 3 AND {extragalactic}",
    "sso_ztf_candidate": "roid = 3",
    "sso_fink_candidate": "roid = 2",
}

PRESETS = ("not_sso", "cone", "time_window", "magnitude", "flux", "min_reliability", "extragalactic", *LIVESTREAM)


def parse_filters(items: Any, survey: Survey) -> tuple[Filter, ...]:
    """The configuration's `filters` list: expressions (strings or {expression: ...}) and presets."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ConfigError("'filters' must be a list.")
    filters = []
    for index, item in enumerate(items):
        where = f"filters[{index}]"
        if isinstance(item, str):
            item = {"expression": item}
        if not isinstance(item, dict) or ("expression" in item) == ("preset" in item):
            raise ConfigError(f"{where} must be an SQL expression or a mapping with 'preset' (and its parameters).")
        if "expression" in item:
            if set(item) != {"expression"} or not isinstance(item["expression"], str) or not item["expression"].strip():
                raise ConfigError(f"{where}.expression must be a non-empty SQL condition, alone.")
            filters.append(Filter(f"{where} ({item['expression']})", item["expression"]))
        else:
            filters.append(_preset(item, survey, where))
    return tuple(filters)


def apply_filters(filters: tuple[Filter, ...]) -> Callable[[DataFrame], DataFrame]:
    """Alerts -> the alerts that pass every filter (null conditions reject)."""

    def transform(alerts: DataFrame) -> DataFrame:
        for item in filters:
            alerts = alerts.where(F.expr(item.condition))
        return alerts

    return transform


def first_rejection(filters: tuple[Filter, ...], survey: Survey) -> Callable[[DataFrame], DataFrame]:
    """Alerts -> the ids of those the filters reject, with the first filter that rejected each:
    the answer to "why didn't I get this alert?"."""

    def transform(alerts: DataFrame) -> DataFrame:
        reason = F.lit(None).cast("string")
        for item in reversed(filters):
            reason = F.when(~F.coalesce(F.expr(item.condition), F.lit(False)), F.lit(item.label)).otherwise(reason)
        object_id = survey.object_column
        return alerts.select(
            survey.id_column,
            F.col(object_id).alias(object_id.rsplit(".", 1)[-1]),
            "topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
            reason.alias("rejected_by"),
        ).where(F.col("rejected_by").isNotNull())

    return transform


def deduplicate(survey: Survey, gap: str) -> Callable[[DataFrame], DataFrame]:
    """A stream of alerts -> one row per alert id with `topics`, the sorted list of topics it came in.

    Copies of an alert that reach Kafka within `gap` of each other are merged (a session
    window per id, on the Kafka timestamp). A row is written once the stream has moved
    `gap` past the alert's last copy, and the state is dropped then: it holds at most
    `gap` of alerts, however long the job runs. (A Parquet table's way: an Iceberg table
    merges each micro-batch's copies into its rows instead, `merge_copies`.)
    """
    return lambda alerts: _copies_merged(survey, alerts.withWatermark("kafka_timestamp", gap),
                                         F.session_window("kafka_timestamp", gap))


def merge_copies(survey: Survey) -> Callable[[DataFrame], DataFrame]:
    """The alerts of one micro-batch -> one row per alert id with `topics`, the sorted list
    of topics it came in (`iceberg.IcebergMerges` then merges these rows into the table's)."""
    return lambda alerts: _copies_merged(survey, alerts)


def _copies_merged(survey: Survey, alerts: DataFrame, *window: Column) -> DataFrame:
    """One row per alert id (and window): the first copy's fields, the copies' topics, the
    earliest Kafka timestamp; the topic, partition and offset of each copy are dropped.
    The rows stay partitioned by the id, which a MERGE on it then needs no shuffle for."""
    per_topic = {"topic", "kafka_partition", "kafka_offset", "kafka_timestamp", "ingest_time"}
    alert_id = survey.id_column
    fields = [name for name in alerts.columns if name not in per_topic and name != alert_id]
    merged = alerts.groupBy(alert_id, *window).agg(
        F.first(F.struct(*[F.col(f"`{name}`") for name in fields])).alias("_alert"),
        F.sort_array(F.collect_set("topic")).alias("topics"),
        F.min("kafka_timestamp").alias("kafka_timestamp"),
    )
    columns = [F.col(alert_id) if name == alert_id else F.col(f"_alert.`{name}`") for name in alerts.columns
               if name not in per_topic]
    return merged.select(*columns, "topics", "kafka_timestamp", F.expr(INGEST_TIME).alias("ingest_time"))


def _paths(schema: StructType, prefix: str = "") -> list[str]:
    names = []
    for field in schema.fields:
        path = f"{prefix}{field.name}"
        names.append(path)
        data_type = field.dataType.elementType if isinstance(field.dataType, ArrayType) else field.dataType
        if isinstance(data_type, StructType):
            names += _paths(data_type, path + ".")
    return names


def _avro_paths(schema: Any, prefix: str = "") -> set[str]:
    """The dotted paths of an Avro schema's fields (records at any depth, through unions and arrays)."""
    if isinstance(schema, list):
        return set().union(*(_avro_paths(branch, prefix) for branch in schema))
    if not isinstance(schema, dict):
        return set()
    if schema.get("type") == "array":
        return _avro_paths(schema.get("items"), prefix)
    paths: set[str] = set()
    for field in schema.get("fields", []) if schema.get("type") == "record" else []:
        paths.add(prefix + field["name"])
        paths |= _avro_paths(field["type"], f"{prefix}{field['name']}.")
    return paths


def columns_lacking(filters: tuple[Filter, ...], alerts: DataFrame, writer: str) -> list[tuple[Filter, list[str]]]:
    """For each filter that names alert columns a writer schema lacks: those columns (the
    writer's records hold null there, so the filter rejects every one of them)."""
    have = _avro_paths(json.loads(writer))
    own = set(_paths(alerts.schema)) - set(METADATA_COLUMNS) - set(NIGHT_COLUMNS)
    lacking = []
    for item in filters:
        names = dict.fromkeys(re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*", item.condition))
        missing = [name for name in names if name in own and name.removeprefix("alert_") not in have]
        if missing:
            lacking.append((item, missing))
    return lacking


def check_filters(filters: tuple[Filter, ...], alerts: DataFrame) -> None:
    """Analyse each filter against the alerts' columns (no data read): a clear error
    for a syntax error, an unknown column (with the closest names) or a non-boolean."""
    paths = _paths(alerts.schema)
    for item in filters:
        try:
            data_type = alerts.select(F.expr(item.condition).alias("c")).schema["c"].dataType
        except ParseException as error:
            raise ConfigError(f"{item.label}: syntax error: {str(error).splitlines()[0]}") from None
        except AnalysisException as error:
            tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*", item.condition)
            unknown = [t for t in tokens if t not in paths and "." in t or (t not in paths and t.lower() not in _SQL_WORDS)]
            for token in unknown:
                close = difflib.get_close_matches(token, paths, n=3)
                if close or "." in token:
                    hint = f"; did you mean {', '.join(close)}?" if close else ""
                    raise ConfigError(f"{item.label}: unknown column {token}{hint}") from None
            raise ConfigError(f"{item.label}: {str(error).splitlines()[0]}") from None
        if data_type.typeName() != "boolean":
            raise ConfigError(f"{item.label}: the condition must be true or false, not a {data_type.simpleString()}.")


_SQL_WORDS = {
    "and", "or", "not", "is", "null", "in", "between", "like", "rlike", "true", "false", "case", "when", "then",
    "else", "end", "cast", "as", "double", "int", "bigint", "string", "float", "abs", "coalesce", "sqrt", "pow",
    "sin", "cos", "asin", "radians", "degrees", "size", "array_contains", "exists", "filter", "lower", "upper",
    "length", "round", "floor", "ceil", "greatest", "least", "isnull", "isnotnull",
}
