"""Column-level filters: Spark SQL conditions over the alert's columns, run in the JVM.

A filter is a Spark SQL expression (`candidate.magpsf < 19.5`), a named preset with
parameters (`fink_spark.transform.presets`), a Fink filter (a Python function run
unchanged) or the user's own function (`fink_spark.transform.pandas_filters`). An alert is kept if it passes every
filter; a condition that is null (a missing value) rejects it. A watchlist first adds the
targets each alert is near (`fink_spark.transform.crossmatch`), then keeps those near one. The same `apply_filters`
serves the live stream and reprocessing; `check_filters` tells, before a query starts, of
a filter that names a column the alerts lack.

A filter may name a table of its own (`table: sn_candidates`): all filters are evaluated in
one pass, and an alert goes to the table of each such filter it passes (and passes the
filters without a table, which every table's alerts pass); `split_by_table` splits the
alerts that passed one at least. An alert that passes none of them is rejected.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import reduce
from pathlib import Path
from typing import Any

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StructType

from fink_spark.errors import ConfigError
from fink_spark.sections import Section
from fink_spark.surveys import Survey
from fink_spark.transform.crossmatch import Targets, with_matches
from fink_spark.transform.decode import METADATA_COLUMNS, NIGHT_COLUMNS
from fink_spark.transform.pandas_filters import (
    fink_filter_column,
    load_function,
    returned_columns,
    scratch_column,
    user_function_column,
)
from fink_spark.transform.presets import preset_condition
from fink_spark.transform.sky import SEPARATION

FILTER_KINDS = ("expression", "preset", "fink_filter", "udf")
MAX_WATCHLIST_TARGETS = 100_000
MAX_WATCHLIST_RADIUS = 3600.0  # arcsec: a watchlist is of positions, not regions


@dataclass(frozen=True)
class Filter:
    """One condition an alert must meet; `label` names it in messages; `prepare` adds the
    columns the condition reads (a watchlist's matches), before it is evaluated; `scratch`,
    a column it added only to be tested, which is dropped then (a Python function's verdict:
    `passed`, or the `error` it raised)."""

    label: str
    condition: str
    prepare: Callable[[DataFrame], DataFrame] | None = None
    scratch: str | None = None
    table: str | None = None  # the table of the alerts that pass it, where it names one


def fink_filter(item: dict[str, Any], where: str) -> Filter:
    """`{fink_filter: package.module.function}`: a Fink filter, a function over pandas Series,
    run unchanged (`fink_spark.transform.pandas_filters`)."""
    params = Section(item, where, {"fink_filter"})
    path = params.get("fink_filter", str, required=True)
    function = load_function(path, f"{where}.fink_filter")
    scratch = scratch_column(where)

    def prepare(alerts: DataFrame) -> DataFrame:
        return alerts.withColumn(scratch, fink_filter_column(alerts, function, f"{where} ({path})"))

    return Filter(f"{where} ({path})", f"`{scratch}`.passed", prepare, scratch)


USER_FUNCTION_KEYS = {"udf", "columns", "returns"}


def user_function(item: dict[str, Any], where: str) -> Filter:
    """`{udf: package.module:function, columns: [...], returns: boolean | {name: type}}`: the
    user's own function over pandas Series of those columns: a filter, or columns added."""
    params = Section(item, where, USER_FUNCTION_KEYS)
    path = params.get("udf", str, required=True)
    columns = params.get("columns", list, required=True)
    if not columns or not all(isinstance(column, str) and column for column in columns):
        raise ConfigError(f"{where}.columns must list the alert columns the function takes, in order.")
    returns = returned_columns(item.get("returns", "boolean"), where)
    function = load_function(path, f"{where}.udf")
    scratch = scratch_column(where)

    def prepare(alerts: DataFrame) -> DataFrame:
        missing = [name for name in columns if name not in _paths(alerts.schema)]
        if missing:
            close = difflib.get_close_matches(missing[0], _paths(alerts.schema), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"{where} ({path}): unknown column {missing[0]}{hint}")
        judged = alerts.withColumn(scratch, user_function_column(alerts, function, columns, returns))
        added = [] if returns is None else [F.col(f"`{scratch}`.`{name}`").alias(name) for name in returns.fieldNames()]
        return judged.select("*", *added)  # the filters after it can read the columns it adds

    return Filter(f"{where} ({path})", f"`{scratch}`.passed", prepare, scratch)


WATCHLIST_KEYS = {"catalog", "radius", "ra_column", "dec_column", "id_column", "name"}


def watchlist(item: dict[str, Any], where: str, base: Path) -> Filter:
    """`{preset: watchlist, catalog: targets.csv, radius: 5}`: the alerts within `radius`
    arcsec of a target, with `<name>_matches` (each target within it, nearest first: its
    `id` and `separation_arcsec`), `<name>_id` and `<name>_separation_arcsec` (the nearest)."""
    params = Section(item, where, WATCHLIST_KEYS | {"preset"})
    catalog = params.get("catalog", str, required=True)
    radius = params.number("radius", low=0, high=MAX_WATCHLIST_RADIUS)
    if radius == 0:
        raise ConfigError(f"{where}.radius must be a positive number of arcsec.")
    name = params.get("name", str, default="watchlist")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"{where}.name must be a column prefix of lower-case letters, digits and _, not {name!r}.")
    columns = [params.get(f"{what}_column", str, default=what) for what in ("ra", "dec", "id")]
    targets = Targets(base / Path(catalog).expanduser(), *columns, where=f"{where}.catalog")
    if len(targets) > MAX_WATCHLIST_TARGETS:
        raise ConfigError(f"{where}.catalog {catalog} holds {len(targets):,} targets; a watchlist is sent to every task "
                          f"and holds at most {MAX_WATCHLIST_TARGETS:,}: cross-match larger catalogs with the table "
                          "afterwards (fink-spark xmatch).")
    matches = f"{name}_matches"

    def prepare(alerts: DataFrame) -> DataFrame:
        near = with_matches(alerts, targets, radius, matches, ("id",), broadcast=True)
        return near.select("*", F.col(matches)[0]["id"].alias(f"{name}_id"),
                           F.col(matches)[0][SEPARATION].alias(f"{name}_{SEPARATION}"))

    return Filter(f"{where} (watchlist {catalog}, {len(targets):,} targets within {radius:g} arcsec)",
                  f"size({matches}) > 0", prepare)


def parse_filters(items: Any, survey: Survey, base: Path | None = None) -> tuple[Filter, ...]:
    """The configuration's `filters` list: expressions (strings or {expression: ...}) and presets
    (a watchlist's relative catalog path taken from `base`, by default the current folder)."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ConfigError("'filters' must be a list.")
    filters = []
    for index, item in enumerate(items):
        where = f"filters[{index}]"
        if isinstance(item, str):
            item = {"expression": item}
        table = None
        if isinstance(item, dict) and "table" in item:
            item = dict(item)
            table = _table_name(item.pop("table"), where, [f.table for f in filters])
        if not isinstance(item, dict) or sum(kind in item for kind in FILTER_KINDS) != 1:
            raise ConfigError(f"{where} must be an SQL expression, a mapping with 'preset' (and its parameters), "
                              "one with 'fink_filter' (a function of Fink's filters) or one with 'udf' (your own).")
        if "expression" in item:
            if set(item) != {"expression"} or not isinstance(item["expression"], str) or not item["expression"].strip():
                raise ConfigError(f"{where}.expression must be a non-empty SQL condition, alone.")
            filters.append(Filter(f"{where} ({item['expression']})", item["expression"]))
        elif "fink_filter" in item:
            filters.append(fink_filter(item, where))
        elif "udf" in item:
            filters.append(user_function(item, where))
        elif item.get("preset") == "watchlist":
            filters.append(watchlist(item, where, base or Path.cwd()))
        else:
            filters.append(Filter(f"{where} ({item.get('preset')})", preset_condition(item, survey, where)))
        if table is not None:
            filters[-1] = replace(filters[-1], table=table)
    return tuple(filters)


RESERVED_TABLES = ("alerts", "quarantine", "rejected")


def _table_name(name: Any, where: str, taken: list[str | None]) -> str:
    """A filter's `table`: a new identifier, not one of the job's other tables."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"{where}.table must be a table name of lower-case letters, digits and _, not {name!r}.")
    if name in RESERVED_TABLES:
        raise ConfigError(f"{where}.table cannot be {name!r}, a name the job's own tables have: choose another.")
    if name in taken:
        raise ConfigError(f"{where}.table {name!r} is named by filters[{taken.index(name)}] already: an alert goes to "
                          "each table whose filter it passes, so each filter needs a table of its own.")
    return name


def tables_of(filters: tuple[Filter, ...]) -> tuple[str, ...]:
    """The tables the filters name, in order (none: the alerts that pass them all go to one table)."""
    return tuple(item.table for item in filters if item.table is not None)


def route_column(table: str) -> str:
    """The column that says, while a batch is split, whether an alert goes to `table`."""
    return f"_to_{table}"


def no_table_label(filters: tuple[Filter, ...]) -> str:
    """Why an alert that passed the filters without a table but none with one is rejected."""
    return f"no table's filter ({', '.join(tables_of(filters))})"


def counted_after(filters: tuple[Filter, ...]) -> list[int]:
    """The filters after which the alerts that passed are counted: each without a table but
    the last filter (the alerts kept are counted anyway); with tables, the alerts that reach
    them too."""
    shared = [index for index, item in enumerate(filters) if item.table is None]
    return shared if tables_of(filters) else shared[:-1]


def split_by_table(alerts: DataFrame, filters: tuple[Filter, ...]) -> dict[str, DataFrame]:
    """The alerts that passed the filters (`apply_filters`'s), by the table each goes to."""
    routes = [route_column(table) for table in tables_of(filters)]
    return {table: alerts.where(F.col(route)).drop(*routes) for table, route in zip(tables_of(filters), routes)}


def prepared(filters: tuple[Filter, ...], alerts: DataFrame) -> DataFrame:
    """The alerts with the columns every filter's condition reads."""
    for item in filters:
        if item.prepare is not None:
            alerts = item.prepare(alerts)
    return alerts


def apply_filters(filters: tuple[Filter, ...]) -> Callable[..., DataFrame]:
    """Alerts -> the alerts that pass every filter (null conditions reject); with filters that
    name tables, those that pass the others and one of them at least, with a column per table
    that says whether it goes there (`route_column`; an alert a Python function raised on goes
    to none). `passed(alerts, index)`, if given, sees those that passed the filters `counted_after`
    names (to count them), and `failed(alerts, filter)` those a Python function is about to
    judge (to find where it raised)."""
    counted = counted_after(filters)

    def transform(alerts: DataFrame, passed: Callable[[DataFrame, int], DataFrame] | None = None,
                  failed: Callable[[DataFrame, Filter], DataFrame] | None = None) -> DataFrame:
        for index, item in enumerate(filters):
            if item.table is not None:
                continue
            alerts = _judged(alerts, item, failed).where(F.expr(item.condition))
            if item.scratch is not None:
                alerts = alerts.drop(item.scratch)
            if passed is not None and index in counted:
                alerts = passed(alerts, index)
        routed = [item for item in filters if item.table is not None]
        if not routed:
            return alerts
        for item in routed:
            alerts = _judged(alerts, item, failed).withColumn(route_column(item.table),
                                                              F.coalesce(F.expr(item.condition), F.lit(False)))
        raised = [F.col(f"`{item.scratch}`.error").isNull() for item in routed if item.scratch is not None]
        goes = reduce(lambda a, b: a | b, [F.col(route_column(item.table)) for item in routed])
        alerts = alerts.where(reduce(lambda a, b: a & b, raised, goes))
        return alerts.drop(*(item.scratch for item in routed if item.scratch is not None))

    return transform


def _judged(alerts: DataFrame, item: Filter, failed: Callable[[DataFrame, Filter], DataFrame] | None) -> DataFrame:
    """The alerts with the columns the filter's condition reads (and, for a Python function, its verdict, seen by `failed`)."""
    if item.prepare is not None:
        alerts = item.prepare(alerts)
    if failed is not None and item.scratch is not None:
        alerts = failed(alerts, item)
    return alerts


def first_rejection(filters: tuple[Filter, ...], survey: Survey) -> Callable[[DataFrame], DataFrame]:
    """Alerts -> the ids of those the filters reject, with the first filter that rejected each:
    the answer to "why didn't I get this alert?"."""

    def transform(alerts: DataFrame) -> DataFrame:
        alerts = prepared(filters, alerts)
        passes = {item.label: F.coalesce(F.expr(item.condition), F.lit(False)) for item in filters}
        raised = {item.label: F.col(f"`{item.scratch}`.error").isNotNull() for item in filters if item.scratch is not None}
        routed = [item for item in filters if item.table is not None]
        reason = F.lit(None).cast("string")
        if routed:  # an alert that passes no table's filter (nor raised in one: that one is quarantined)
            reason = F.when(~reduce(lambda a, b: a | b, [passes[item.label] | raised.get(item.label, F.lit(False))
                                                         for item in routed]), F.lit(no_table_label(filters)))
        for item in reversed([item for item in filters if item.table is None]):
            rejects = ~passes[item.label]
            if item.label in raised:  # an alert a Python filter raised on is quarantined, not rejected
                rejects = rejects & ~raised[item.label]
            reason = F.when(rejects, F.lit(item.label)).otherwise(reason)
        object_id = survey.object_column
        return alerts.select(
            survey.id_column,
            F.col(object_id).alias(object_id.rsplit(".", 1)[-1]),
            "topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
            reason.alias("rejected_by"),
        ).where(F.col("rejected_by").isNotNull())

    return transform


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
    alerts = prepared(filters, alerts)
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
