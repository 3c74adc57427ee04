"""A job's output read with Spark as one table, whatever it is: an Iceberg warehouse's table, or a
Parquet folder whose files were written with different columns."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    StructType,
)

from fink_spark.schema.table import widest
from fink_spark.state import OUTPUT_TABLE_SCHEMA, CheckpointFiles
from fink_spark.table.warehouse import ALERTS, check_one_table, is_warehouse, metadata_location


def read_table(spark: SparkSession, path: str, table: str = ALERTS) -> DataFrame:
    """A fink-spark output as one table. An Iceberg warehouse: its table (`alerts`,
    `quarantine` or `rejected`) by its current metadata file, with every column of every
    schema it had. A Parquet folder: every file read with the table's latest columns (added
    columns null in older files, widened ones read wide); Spark alone would take the
    columns of one file, or fail to merge a widened column across files."""
    check_one_table(path, table)
    if is_warehouse(path):
        return spark.read.format("iceberg").load(metadata_location(path, table))
    saved = CheckpointFiles.at(path).read(OUTPUT_TABLE_SCHEMA)
    if saved is not None:
        return spark.read.schema(StructType.fromJson(json.loads(saved)["spark_schema"])).parquet(path)
    # A folder fink-spark did not write: its files' schemas, merged and widened.
    files = sorted(Path(path).rglob("*.parquet")) if Path(path).is_dir() else []
    by_schema = {str(pq.read_schema(file)): file for file in files}
    if len(by_schema) < 2:
        return spark.read.option("mergeSchema", "true").parquet(path)
    merged = None
    for file in by_schema.values():
        columns = spark.read.parquet(str(file)).schema
        merged = columns if merged is None else widest(merged, columns, str(file))
    return spark.read.schema(merged).parquet(path)
