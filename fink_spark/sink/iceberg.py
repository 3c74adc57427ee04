"""Iceberg tables written batch by batch from inside `foreachBatch`, exactly once: appends
tagged with the query and batch id (`IcebergAppends`), or one MERGE INTO a batch for a
de-duplicated table (`IcebergMerges`). The catalog, the tables' names and properties and the
tags' keys are `fink_spark.table.catalog`'s."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from fink_spark.config.job import TableOutput
from fink_spark.sink.metrics import SessionMetrics
from fink_spark.surveys import Survey
from fink_spark.table.catalog import (
    ACCEPT_ANY_SCHEMA,
    BATCH_ID,
    MERGE_WINDOW,
    MERGED_TABLE,
    SCHEMA_CHANGE,
    SNAPSHOT_PROPERTY,
    WRITER,
    Tables,
    alert_partitioning,
    newest_tagged,
    properties_of,
    property_set,
    table_properties,
)
from fink_spark.table.warehouse import QUARANTINE, REJECTED
from fink_spark.transform.decode import OBS_TIME, has_column
from fink_spark.transform.dedup import merge_copies
from fink_spark.transform.sky import HEALPIX, POSITION_COLUMNS


class IcebergAppends:
    """One Iceberg table written batch by batch from inside `foreachBatch`, exactly once.

    The same interface as the Parquet sink (`has`, `write`, `write_nothing`): a batch is one
    append tagged with this writer (the query's checkpoint) and its batch id; `has` looks for
    the newest append of this writer among the current snapshot and its ancestors.
    `fink-spark maintain` never expires that snapshot (`newest_tagged`).
    """

    def __init__(self, spark: SparkSession, name: str, writer: str, partitioning: list[str]) -> None:
        self.spark, self.name, self.writer, self.partitioning = spark, name, writer, partitioning

    def prepare(self, columns: StructType, properties: dict[str, str], change: str | None = None,
                order: str | None = None) -> None:
        """Create the table, or evolve its schema to `columns` (new columns at any depth,
        int -> long and float -> double promoted), before the query starts; with `order`, each
        write sorts its rows by it within every partition, in the task (no shuffle)."""
        if not self.spark.catalog.tableExists(self.name):
            # DDL, not a write of an empty frame: no Spark job, a second less per table
            ddl = self.spark._jvm.org.apache.spark.sql.types.DataType.fromJson(columns.json()).toDDL()  # type: ignore[attr-defined]
            partitioned = f" PARTITIONED BY ({', '.join(self.partitioning)})" if self.partitioning else ""
            settings = ", ".join(f"'{key}' = '{value}'" for key, value in
                                 {"fink-spark.created-by": "fink-spark", **properties}.items())
            self.spark.sql(f"CREATE TABLE {self.name} ({ddl}) USING iceberg{partitioned} TBLPROPERTIES ({settings})")
            have: dict[str, str] = properties
        else:
            if not _same_columns(self.spark.table(self.name).schema, columns):
                self._evolve(columns, change)
            have = properties_of(self.spark, self.name)
            self._set({key: value for key, value in properties.items() if have.get(key) != value})
        if order is not None and have.get("sort-order") != f"{order} ASC NULLS FIRST":
            self.spark.sql(f"ALTER TABLE {self.name} WRITE LOCALLY ORDERED BY {order}")

    def _set(self, settings: dict[str, str]) -> None:
        """Set these properties, in one commit (none if there are none)."""
        if settings:
            pairs = ", ".join(f"'{key}' = '{value}'" for key, value in settings.items())
            self.spark.sql(f"ALTER TABLE {self.name} SET TBLPROPERTIES ({pairs})")

    def _evolve(self, columns: StructType, change: str | None) -> None:
        """Add `columns` to the table's with one `mergeSchema` append of no rows, whose
        snapshot summary holds the change."""
        writer = self.spark.createDataFrame([], columns).writeTo(self.name).option("mergeSchema", "true")
        writer = writer.option("check-ordering", "false")
        if change:
            writer = writer.option(f"snapshot-property.{SCHEMA_CHANGE}", change)
        writer.append()

    def has(self, batch_id: int) -> bool:
        """Whether this writer's batch is committed already (before a crash or a stop)."""
        newest = newest_tagged(self.spark, self.name, self.writer)
        return newest is not None and int(newest[1].get(BATCH_ID)) >= batch_id

    def write(self, batch_id: int, frame: DataFrame) -> None:
        """Append the batch, tagged."""
        (frame.writeTo(self.name).option("check-ordering", "false")
         .option(f"snapshot-property.{WRITER}", self.writer)
         .option(f"snapshot-property.{BATCH_ID}", str(batch_id)).append())

    def metrics(self) -> SessionMetrics:
        """A V2 write runs a plan of its own, seen by the session's listener only."""
        return SessionMetrics()

    def write_nothing(self, batch_id: int) -> None:
        """Nothing to record: a batch with no append is written again, as nothing, if replayed."""


class IcebergMerges(IcebergAppends):
    """The table of a de-duplicating job: one row per alert id, with `topics`.

    Each micro-batch's alerts, one row per id (`merge`), are merged into the rows the table
    got within the last `gap` (by their `ingest_time`, which bounds the files read): a copy
    of an alert already there adds its topics to the row's, a new alert is inserted. One
    MERGE INTO a batch, tagged as an append is (`has`); replayed, it changes nothing.

    Parameters
    ----------
    spark, name, writer, partitioning
        As an append's: the session, the table, the tag of its batches and its partitions.
    id_column
        The alert's id, one row each.
    gap
        How far back in `ingest_time` a copy is merged into its row (a Spark interval).
    merge
        A batch's alerts to one row per id, with their topics.
    """

    def __init__(self, spark: SparkSession, name: str, writer: str, partitioning: list[str], id_column: str, gap: str,
                 merge: Callable[[DataFrame], DataFrame]) -> None:
        super().__init__(spark, name, writer, partitioning)
        self.id_column, self.gap, self.merge = id_column, gap, merge

    def prepare(self, columns: StructType, properties: dict[str, str], change: str | None = None,
                order: str | None = None) -> None:
        """As an append's, with the settings of a merged table."""
        super().prepare(columns, {**properties, **MERGED_TABLE, MERGE_WINDOW: self.gap}, change, order)

    def _evolve(self, columns: StructType, change: str | None) -> None:
        """Spark 4.1 resolves no column of a MERGE into a table that accepts any schema: a
        merged table accepts one only while its schema is evolved."""
        with property_set(self.spark, self.name, ACCEPT_ANY_SCHEMA, "true"):
            super()._evolve(columns, change)

    def write(self, batch_id: int, frame: DataFrame) -> None:
        """Merge the batch's alerts into the table's rows of the last `gap`, tagged."""
        session = frame.sparkSession  # the query's own session: its tags reach no other write
        tags = {WRITER: self.writer, BATCH_ID: str(batch_id)}
        for key, value in tags.items():
            session.conf.set(SNAPSHOT_PROPERTY + key, value)
        alert_id = f"`{self.id_column}`"
        try:
            session.sql(
                f"MERGE INTO {self.name} t USING {{copies}} s "
                f"ON t.{alert_id} = s.{alert_id} AND t.ingest_time >= current_timestamp() - INTERVAL '{self.gap}' "
                "WHEN MATCHED AND size(array_except(s.topics, t.topics)) > 0 "
                "THEN UPDATE SET t.topics = array_sort(array_union(t.topics, s.topics)) "
                "WHEN NOT MATCHED THEN INSERT *",
                copies=frame.transform(self.merge),
            )
        finally:
            for key in tags:
                session.conf.unset(SNAPSHOT_PROPERTY + key)


def _same_columns(have: StructType, want: StructType) -> bool:
    """Whether a table already has `want`'s columns with the same types (order and nullability aside)."""

    def shape(schema: Any) -> Any:
        if isinstance(schema, dict):
            if schema.get("type") == "struct":
                return sorted((field["name"], shape(field["type"])) for field in schema["fields"])
            return {key: shape(value) for key, value in schema.items() if key not in ("containsNull", "valueContainsNull")}
        return schema

    return shape(json.loads(have.json())) == shape(json.loads(want.json()))


def open_iceberg_sinks(spark: SparkSession, output: TableOutput, survey: Survey, writer: str,
                       columns: dict[str, StructType], changes: str | None) -> dict[str, IcebergAppends]:
    """A job's Iceberg tables (the alerts' tables, quarantine, rejected), created or evolved to `columns`.

    The parameters are `open_sinks`'s (`SINK_KINDS` calls each kind alike).
    """
    tables = Tables.of(output, survey.name)
    tables.open(spark)
    partitioning = {QUARANTINE: ["topic", "days(ingest_time)"], REJECTED: ["topic"]}
    sinks = {}
    for name, frame_columns in columns.items():
        of_alerts = name not in partitioning
        layout = alert_partitioning(output.partition_by) if of_alerts else partitioning[name]
        if of_alerts and output.deduplicate_gap:
            sink = IcebergMerges(spark, tables.name(name), writer, layout, survey.id_column,
                                 output.deduplicate_gap, merge_copies(survey))
        else:
            sink = IcebergAppends(spark, tables.name(name), writer, layout)
        # statistics for the columns readers select alerts by: id, object, time
        metrics = tuple(column for column in (survey.id_column, survey.object_column, OBS_TIME, "ingest_time")
                        if has_column(frame_columns, column))
        sky = tuple(column for column in POSITION_COLUMNS if has_column(frame_columns, column))
        properties = table_properties(output.compression, metrics, sky)
        if of_alerts:  # each data file a compact region of the sky (HEALPix cells in order)
            sink.prepare(frame_columns, properties, changes, HEALPIX if HEALPIX in sky else None)
        else:
            sink.prepare(frame_columns, properties)
        sinks[name] = sink
    return sinks
