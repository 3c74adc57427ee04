"""Every reader that README shows returns a null list as null, as Fink sent it: real ZTF
alerts without history (prv_candidates null) and real LSST alerts without previous sources
(prvDiaSources, prvDiaForcedSources null), beside alerts with them, reprocessed into Iceberg
tables. pyiceberg 0.12 alone reads them as [] (apache/iceberg-python #3833): fink-spark's
readers carry the fix, polars and DuckDB read the files themselves."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from conftest import sample
from pyspark.sql import SparkSession

import fink_spark
from fink_spark.config.job import parse_config
from fink_spark.run.reprocess import reprocess
from fink_spark.surveys import LSST, ZTF
from fink_spark.table.warehouse import load_pyiceberg
from fink_spark.testing.publisher import read_saved_alerts
from fink_spark.view.explore import Output, Selection

CASES = {"ztf": ("ztf-spark-2021", ZTF, ("prv_candidates",)),
         "lsst": ("lsst-2026", LSST, ("prvDiaSources", "prvDiaForcedSources"))}


@pytest.fixture(scope="module")
def warehouses(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("readers")
    made = {}
    for name, (samples, _, _) in CASES.items():
        made[name] = folder / name
        config = parse_config({"survey": name, "output": {"table": {"path": str(made[name]),
                                                                     "checkpoint": str(folder / f"{name}_chk")}}},
                              kafka_required=False)
        reprocess(spark, config, [str(sample(samples))], [], f"fink_readers_{name}")
    return made


def sent(name: str) -> dict[int, tuple[bool, ...]]:
    """By alert id: which of the lists Fink sent as null."""
    samples, survey, lists = CASES[name]
    return {record[survey.id_column]: tuple(record[column] is None for column in lists)
            for saved in read_saved_alerts([sample(samples)]) for record in saved.records}


def nulls(rows: pa.Table | pl.DataFrame, name: str) -> dict[int, tuple[bool, ...]]:
    _, survey, lists = CASES[name]
    table = rows if isinstance(rows, pa.Table) else rows.to_arrow()
    return {row[survey.id_column]: tuple(row[column] is None for column in lists) for row in table.to_pylist()}


def duckdb_over_polars(table: object, columns: list[str]) -> pa.Table:
    """README's DuckDB: a query over the frame polars read."""
    frame = pl.scan_iceberg(table).select(columns).collect()  # noqa: F841 - DuckDB finds it by name
    return duckdb.sql(f"SELECT {', '.join(columns)} FROM frame").to_arrow_table()


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_reader_returns_a_null_list_as_null(spark: SparkSession, warehouses: dict[str, Path], name: str) -> None:
    want = sent(name)
    assert sorted(set(want.values())) == [(False,) * len(CASES[name][2]), (True,) * len(CASES[name][2])]  # both kinds
    _, survey, lists = CASES[name]
    columns = [survey.id_column, *lists]
    path = str(warehouses[name])
    table = load_pyiceberg(path)
    readers = {
        "pyiceberg (fink_spark's load_pyiceberg)": lambda: table.scan(selected_fields=tuple(columns)).to_arrow(),
        "pandas from it": lambda: pa.Table.from_pandas(table.scan(selected_fields=tuple(columns)).to_pandas()),
        "polars scan_iceberg": lambda: pl.scan_iceberg(table).select(columns).collect(),
        "DuckDB over polars": lambda: duckdb_over_polars(table, columns),
        "Spark (read_table)": lambda: fink_spark.read_table(spark, path).select(*columns).toArrow(),
        "explore": lambda: Output(path).alerts(Selection(), columns),
        "cone": lambda: fink_spark.cone(path, 0.0, 0.0, 180 * 3600, columns=columns),
    }
    for reader, read in readers.items():
        assert nulls(read(), name) == want, reader
