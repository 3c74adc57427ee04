"""The alerts a job kept, selected and shown without Spark: tables in the terminal, the
rows behind cutouts, light curves, cards and summaries.

A job's output is an Iceberg warehouse (its alerts table, read with pyiceberg) or a Parquet
folder (only its committed files count, `fink_spark.table.committed`, read with pyarrow):
an answer takes about a second. A `--where`, a Spark SQL condition like the job's filters,
starts a local Spark session to evaluate it.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fink_spark.display import Summary, format_table, format_value
from fink_spark.errors import ConfigError
from fink_spark.surveys import Survey, survey_with_columns, value_at
from fink_spark.table.committed import committed_files, read_committed
from fink_spark.table.warehouse import ALERTS, check_one_table, is_warehouse, load_pyiceberg

KAFKA_ORDER = ("topic", "kafka_partition", "kafka_offset")

NIGHT = ("year", "month", "day")


def arrow_column(table: pa.Table, path: str) -> pa.ChunkedArray | None:
    """A (dotted) column of an Arrow table, None where the table lacks it."""
    first, *rest = path.split(".")
    if first not in table.column_names:
        return None
    column = table[first]
    for name in rest:
        if not pa.types.is_struct(column.type) or column.type.get_field_index(name) < 0:
            return None
        column = pc.struct_field(column, name)
    return column


@dataclass(frozen=True)
class Selection:
    """Which alerts to look at: every condition given must hold."""

    alert_id: int | None = None
    object_id: str | None = None
    topic: str | None = None
    night: date | None = None
    where: str | None = None

    def columns(self, survey: Survey) -> list[str]:
        """The top-level columns the selection reads."""
        return [survey.id_column, survey.object_column.split(".")[0], "topic", "topics", *NIGHT]

    def keeps_partition(self, values: dict[str, object]) -> bool:
        """Whether a file's folder (year=/month=/day=) can hold selected alerts."""
        if self.night is None:
            return True
        wanted = dict(zip(NIGHT, (self.night.year, self.night.month, self.night.day)))
        return all(values.get(name, wanted[name]) == wanted[name] for name in NIGHT)

    def mask(self, table: pa.Table, survey: Survey) -> pa.ChunkedArray | np.ndarray | None:
        """The rows of a table that match (None: all of them)."""
        conditions: list[Any] = []
        if self.alert_id is not None:
            conditions.append(_equal(table, survey.id_column, self.alert_id))
        if self.object_id is not None:
            column = arrow_column(table, survey.object_column)
            conditions.append(None if column is None else pc.equal(pc.cast(column, pa.string()), self.object_id))
        if self.topic is not None:
            conditions.append(_topic_is(table, self.topic))
        if self.night is not None:
            for name, value in zip(NIGHT, (self.night.year, self.night.month, self.night.day)):
                conditions.append(_equal(table, name, value))
        if not conditions:
            return None
        if any(condition is None for condition in conditions):  # a column this file lacks
            return np.zeros(table.num_rows, dtype=bool)
        mask = conditions[0]
        for condition in conditions[1:]:
            mask = pc.and_kleene(mask, condition)
        return mask


def _equal(table: pa.Table, path: str, value: Any) -> pa.ChunkedArray | None:
    column = arrow_column(table, path)
    return None if column is None else pc.equal(column, pa.scalar(value).cast(column.type))


def _topic_is(table: pa.Table, topic: str) -> pa.ChunkedArray | np.ndarray | None:
    """`topic`, or with de-duplication the `topics` list, names the topic."""
    if "topic" in table.column_names:
        return pc.equal(table["topic"], topic)
    if "topics" not in table.column_names:
        return None
    topics = table["topics"].combine_chunks()
    mask = np.zeros(table.num_rows, dtype=bool)
    hits = pc.equal(pc.list_flatten(topics), topic).to_numpy(zero_copy_only=False)
    mask[pc.list_parent_indices(topics).to_numpy()[hits]] = True
    return mask


def parse_night(night: str | None) -> date | None:
    if night is None:
        return None
    try:
        return date.fromisoformat(night)
    except ValueError:
        raise ConfigError(f"--night must be a date such as 2026-03-22, not {night!r}.") from None


class Output:
    """A job's output: an Iceberg warehouse (its alerts table, or `table`: the table of a filter
    that names one; read with pyiceberg) or a Parquet folder (its committed files, read with pyarrow)."""

    def __init__(self, path: str, table: str = ALERTS) -> None:
        self.path, self.table_name = path, table
        check_one_table(path, table)
        if is_warehouse(path):
            self.table: Any = load_pyiceberg(path, table)
            names = self.table.schema().column_names
            self.files: list[Path] = []
            if self.table.current_snapshot() is None:
                raise ConfigError(f"{path} holds no committed alerts yet: its {table} table has no snapshot.")
        else:
            self.table = None
            self.files = committed_files(path)  # listed once, for every read of this command
            if not self.files:
                raise ConfigError(f"{path} holds no committed alerts yet: no Parquet file is listed in its _spark_metadata log.")
            names = pq.read_schema(self.files[0]).names
        survey = survey_with_columns(names)
        if survey is None:
            raise ConfigError(f"{path} does not hold fink-spark alerts: its files have no alert id column ({names[:5]}...).")
        self.survey = survey

    def alerts(self, selection: Selection, columns: list[str] | None = None) -> pa.Table:
        """The selected alerts (all columns unless `columns` names the top-level ones needed)."""
        wanted = None if columns is None else list(dict.fromkeys([*columns, *selection.columns(self.survey)]))
        if selection.where:
            table = _spark_rows(self.path, selection.where, wanted, self.table_name)
        elif self.table is not None:
            table = self._scan(selection, wanted)
        else:
            return read_committed(self.path, wanted, rows=lambda t: selection.mask(t, self.survey),
                                  partitions=selection.keeps_partition, files=self.files)
        mask = selection.mask(table, self.survey)
        return table if mask is None else table.filter(mask)

    def _scan(self, selection: Selection, wanted: list[str] | None) -> pa.Table:
        """The Iceberg table's rows, a night's files only when a night is selected."""
        from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThan

        row_filter: Any = AlwaysTrue()
        if selection.night is not None:
            start = datetime.combine(selection.night, datetime.min.time(), timezone.utc)
            row_filter = And(GreaterThanOrEqual("obs_time", start.isoformat()),
                             LessThan("obs_time", (start + timedelta(days=1)).isoformat()))
        present = set(self.table.schema().column_names)
        fields = ("*",) if wanted is None else tuple(name for name in wanted if name in present)
        return self.table.scan(row_filter=row_filter, selected_fields=fields).to_arrow()


def _spark_rows(path: str, where: str, columns: list[str] | None, table: str) -> pa.Table:
    """The rows meeting a Spark SQL condition, evaluated by a local Spark session."""
    from pyspark.sql import functions as F

    from fink_spark.config.session import build_session, local_conf
    from fink_spark.table.read import read_table

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # a local session: no warning about the host name
    conf = {**local_conf(connectors=is_warehouse(path)), "spark.ui.showConsoleProgress": "false"}  # Iceberg: its jar
    spark = build_session("fink-spark-explore", "local[2]", conf)
    alerts = read_table(spark, path, table)
    try:
        chosen = alerts.where(F.expr(where))
        if columns is not None:
            chosen = chosen.select(*[name for name in columns if name in alerts.columns])
        return chosen.toArrow()
    except Exception as error:  # noqa: BLE001 - Spark's analysis errors are pages long
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"--where {where!r} is not a Spark SQL condition over the alert columns: {first_line}") from None


def records(table: pa.Table, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a table as dicts (pyarrow turns a table without columns into empty dicts)."""
    if table.num_rows == 0:
        return []
    return table.slice(offset, limit).to_pylist()


def _top_level(paths: Sequence[str]) -> list[str]:
    return [path.split(".")[0] for path in paths]


def show(output: Output, selection: Selection, limit: int, page: int, output_format: str, out: TextIO) -> int:
    """Write the console columns of one page of alerts (Kafka order) as a table, CSV or JSON;
    returns the row count.

    Parameters
    ----------
    output
        The table or Parquet folder to read.
    selection
        Which alerts (topics, times, ids, a condition).
    limit, page
        Rows a page, and which page (from 0).
    output_format
        table, csv or json.
    out
        Where to write.
    """
    survey = output.survey
    table = output.alerts(selection, [*_top_level([c.column for c in survey.console_columns]), *KAFKA_ORDER])
    order = [(name, "ascending") for name in KAFKA_ORDER if name in table.column_names]
    if order:
        table = table.sort_by(order)
    labels = [column.label for column in survey.console_columns]
    rows = [
        survey.console_cells({column.label: value_at(alert, column.column) for column in survey.console_columns})
        for alert in records(table, page * limit, limit)
    ]
    if output_format == "csv":
        writer = csv.writer(out)
        writer.writerow(labels)
        writer.writerows(rows)
    elif output_format == "json":
        out.write(json.dumps([dict(zip(labels, row)) for row in rows], indent=1) + "\n")
    else:
        out.write("\n".join(format_table(labels, rows)) + "\n")
    return len(rows)


def summary_rows(output: Output, selection: Selection) -> list[dict[str, Any]]:
    """Topic, night, Fink class and magnitude of each selected alert."""
    survey = output.survey
    table = output.alerts(selection, ["topic", "topics", *NIGHT, *_top_level([survey.class_column, survey.brightness_column])])
    return [
        {
            "topic": alert["topic"] if "topic" in alert else ",".join(alert.get("topics") or []),
            **{name: alert[name] for name in NIGHT},
            "fink_class": value_at(alert, survey.class_column),
            "magnitude": survey.magnitude_of(alert),
        }
        for alert in records(table)
    ]


def summarize(rows: Sequence[dict[str, Any]]) -> Summary:
    """Counts per topic, night and Fink class, and the magnitudes (see `summary_rows`)."""
    topics = Counter(str(row["topic"]) for row in rows)
    nights = Counter(f"{row['year']:04d}-{row['month']:02d}-{row['day']:02d}" for row in rows)
    classes = Counter(format_value(row["fink_class"]) for row in rows)
    magnitudes = [row["magnitude"] for row in rows if row["magnitude"] is not None and math.isfinite(row["magnitude"])]
    return Summary(len(rows), dict(sorted(topics.items())), dict(sorted(nights.items())),
                   dict(classes.most_common()), magnitudes)


def newest_alert(output: Output, selection: Selection) -> dict[str, Any]:
    alerts = records(output.alerts(selection))
    if not alerts:
        raise ConfigError("No alert matches the selection.")
    return max(alerts, key=output.survey.mjd_of)


def object_history(output: Output, alert: dict[str, Any]) -> list[dict[str, Any]]:
    """Every kept alert of the alert's object."""
    return records(output.alerts(Selection(object_id=str(output.survey.object_of(alert)))))
