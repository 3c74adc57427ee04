"""The job's Apache Iceberg tables: where they are and how they are made.

By default a job's tables live in a warehouse folder (`output.table.path`) whose catalog is
one SQLite file, `catalog.db` (Iceberg's JDBC catalog, which pyiceberg reads too): no
server to run, and commits from several processes (the stream and `fink-spark maintain`)
are atomic. A cluster names a Spark catalog of its own instead (`output.table.catalog`:
JDBC on PostgreSQL, REST, Hive, ...), configured by spark-submit's `--conf spark.sql.catalog.<name>...`.

Each micro-batch is one append whose snapshot summary says which query wrote it and its
batch id (`fink-spark.writer`, `fink-spark.batch-id`: `newest_tagged` finds it): a batch
replayed after a crash finds its own append and adds nothing twice. A schema change is an
append of its own (no rows), with the change in its summary (`fink-spark.schema-change`),
so the table's history of schemas is Iceberg's own. The writers are `fink_spark.sink.iceberg`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from fink_spark.config.job import TableOutput
from fink_spark.errors import ConfigError
from fink_spark.table.warehouse import ALERTS, CATALOG, CATALOG_FILE
from fink_spark.transform.filters import Filter, tables_of

WRITER, BATCH_ID, SCHEMA_CHANGE = "fink-spark.writer", "fink-spark.batch-id", "fink-spark.schema-change"

MERGE_WINDOW = "fink-spark.merge-window"  # a merged table's property: how far back its stream merges copies

SNAPSHOT_PROPERTY = "spark.sql.iceberg.snapshot-property."  # a session's properties for its next commits

ACCEPT_ANY_SCHEMA = "write.spark.accept-any-schema"

# A merged table: no MERGE resolves with the first; with the second, a copy merged into a
# row of an earlier batch writes a delete file and the new row, not the row's whole file
# again; the third writes the merged rows as they come, as an append does (no shuffle).
MERGED_TABLE = {ACCEPT_ANY_SCHEMA: "false", "write.merge.mode": "merge-on-read", "write.merge.distribution-mode": "none"}


def table_properties(compression: str, metrics_columns: tuple[str, ...] = (), full_metrics: tuple[str, ...] = ()) -> dict[str, str]:
    """How the job's tables are written: Parquet files (zstd, no dictionaries), no shuffle before a write (each
    task writes its partitions side by side), metadata files pruned as they are replaced,
    concurrent commits retried. Column statistics (min, max, nulls), which let a reader skip
    files, only for `metrics_columns` (strings cut to 16 characters) and `full_metrics`
    (whole values: the sky's positions): gathering them for an alert's hundred columns cost
    about a tenth of the write (bench/SINKS.md)."""
    return {
        "format-version": "2",
        "write.format.default": "parquet",
        "write.parquet.compression-codec": "none" if compression == "uncompressed" else compression,
        "write.parquet.row-group-size-bytes": str(64 * 1024 * 1024),
        # No dictionary encoding, as the Parquet sink (session.TUNING_CONF): alert values are
        # mostly unique floats and cutouts; Iceberg's writer reads Parquet's own key here.
        "parquet.enable.dictionary": "false",
        "write.distribution-mode": "none",
        "write.spark.fanout.enabled": "true",
        ACCEPT_ANY_SCHEMA: "true",
        "write.metadata.metrics.default": "none",
        **{f"write.metadata.metrics.column.{column}": "truncate(16)" for column in metrics_columns},
        **{f"write.metadata.metrics.column.{column}": "full" for column in full_metrics},
        "write.metadata.delete-after-commit.enabled": "true",
        "write.metadata.previous-versions-max": "20",
        # The stream appends every few seconds while `fink-spark maintain` rewrites files: a
        # commit that loses the race is retried on the new metadata, for up to a minute or so.
        "commit.retry.num-retries": "30",
        "commit.retry.min-wait-ms": "100",
        "commit.retry.max-wait-ms": "5000",
    }


def alert_tables(filters: tuple[Filter, ...]) -> tuple[str, ...]:
    """The tables of a job's kept alerts: one per filter that names one, else `alerts`."""
    return tables_of(filters) or (ALERTS,)


def catalog_conf(warehouse: str) -> dict[str, str]:
    """Spark settings of a warehouse's SQLite catalog, named `fink`."""
    root = Path(warehouse).resolve()
    prefix = f"spark.sql.catalog.{CATALOG}"
    return {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.type": "jdbc",
        f"{prefix}.uri": f"jdbc:sqlite:{root / CATALOG_FILE}",
        f"{prefix}.warehouse": root.as_uri(),
        f"{prefix}.jdbc.schema-version": "V1",
        # Always the table's newest metadata: `fink-spark maintain` commits from another process.
        f"{prefix}.cache-enabled": "false",
    }


def use_warehouse(spark: SparkSession, warehouse: str) -> None:
    """Point the session's `fink` catalog at a warehouse folder (made if missing).

    A session holds one `fink` catalog at a time: for another warehouse (a test session, a
    notebook reading two outputs), its catalogs are reset and `fink` made again."""
    if "://" in warehouse and not warehouse.startswith("file:"):
        raise ConfigError(f"output.table.path {warehouse} is not local: a warehouse's SQLite catalog must be on a local "
                          "disk. On a cluster, name a shared catalog instead (output.table.catalog, docs/deploying.md).")
    Path(warehouse.removeprefix("file:")).mkdir(parents=True, exist_ok=True)
    conf = catalog_conf(warehouse.removeprefix("file:"))
    uri_key = f"spark.sql.catalog.{CATALOG}.uri"
    current = spark.conf.get(uri_key, None)
    if current == conf[uri_key]:
        return
    for key, value in conf.items():
        spark.conf.set(key, value)
    if current is not None:
        spark._jsparkSession.sessionState().catalogManager().reset()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Tables:
    """The identifiers of a job's tables: `<catalog>.<namespace>.alerts`, `.quarantine`, `.rejected`."""

    catalog: str
    namespace: str
    warehouse: str | None

    @classmethod
    def of(cls, output: TableOutput, survey_name: str) -> Tables:
        return cls(output.catalog or CATALOG, output.namespace or survey_name, None if output.catalog else output.path)

    def name(self, table: str) -> str:
        return f"{self.catalog}.{self.namespace}.{table}"

    def open(self, spark: SparkSession) -> None:
        """Make the session's catalog point at these tables, and their namespace exist."""
        if self.warehouse is not None:
            use_warehouse(spark, self.warehouse)
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {self.catalog}.{self.namespace}")


@contextmanager
def property_set(spark: SparkSession, name: str, key: str, value: str) -> Iterator[None]:
    """A table property set for a while, then as it was. Spark 4.1 resolves no column of a
    MERGE or UPDATE into a table that accepts any schema, and evolves the schema of none
    that does not: the writes that need the other setting run inside this."""
    before = properties_of(spark, name).get(key)
    spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ('{key}' = '{value}')")
    try:
        yield
    finally:
        if before is None:
            spark.sql(f"ALTER TABLE {name} UNSET TBLPROPERTIES ('{key}')")
        else:
            spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ('{key}' = '{before}')")


def properties_of(spark: SparkSession, name: str) -> dict[str, str]:
    """A table's properties (Iceberg's and fink-spark's)."""
    return {row.key: row.value for row in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}


def newest_tagged(spark: SparkSession, name: str, writer: str | None = None) -> tuple[int, dict[str, str]] | None:
    """The newest snapshot, among the current one and its ancestors, appended by `writer` (any
    fink-spark query when None): (its commit time in ms, its summary)."""
    jvm = spark._jvm  # type: ignore[attr-defined]
    table = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(spark._jsparkSession, name)  # type: ignore[attr-defined]
    table.refresh()
    snapshot = table.currentSnapshot()
    while snapshot is not None:
        summary = snapshot.summary()
        tag = summary.get(WRITER)
        if tag is not None and (writer is None or tag == writer):
            return snapshot.timestampMillis(), {WRITER: tag, BATCH_ID: summary.get(BATCH_ID)}
        parent = snapshot.parentId()
        snapshot = table.snapshot(parent) if parent is not None else None
    return None


def alert_partitioning(partition_by: tuple[str, ...]) -> list[str]:
    """Hidden partitioning of the alerts (Iceberg's DDL): by night (the UTC day of
    `obs_time`), and by the value of the other columns named (topic, a class)."""
    return ["days(obs_time)" if column == "night" else f"`{column}`" for column in partition_by]
