"""The default sink, an Apache Iceberg table, read as users read it: with tools that know
nothing of fink-spark (Spark's Iceberg source, pyiceberg to pandas and Arrow, polars, DuckDB),
after a schema change between two runs. Hidden partitioning prunes files by night."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import USER, job_config, run_job, sample
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan
from pyspark.sql import SparkSession
from reference import check_alerts, read_alerts, ztf_mjd

from fink_spark.cli import main as cli
from fink_spark.cli.explore import main as explore
from fink_spark.config.job import parse_config
from fink_spark.errors import ConfigError
from fink_spark.run.reprocess import reprocess
from fink_spark.surveys import ZTF
from fink_spark.table.read import read_table
from fink_spark.testing.local_broker import LocalKafka
from fink_spark.testing.publisher import publish


def user_catalog(warehouse: Path) -> SqlCatalog:
    """The warehouse's catalog as a pyiceberg user opens it (README 'Reading the table')."""
    return SqlCatalog("fink", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=warehouse.as_uri())


def metadata_location(warehouse: Path, table: str = "alerts") -> str:
    """The table's current metadata file, from the SQLite catalog (what Spark can load by path)."""
    with sqlite3.connect(warehouse / "catalog.db") as connection:
        (location,) = connection.execute("SELECT metadata_location FROM iceberg_tables WHERE table_name = ?",
                                         (table,)).fetchone()
    return location


def iceberg_config(broker: LocalKafka, tmp_path: Path, topics: list[str], **table: object):  # noqa: ANN201
    """The test configuration with the default sink: `output.table` (Iceberg)."""
    config = job_config(broker, tmp_path, topics)
    from dataclasses import replace

    return replace(config, output=replace(config.output, format="iceberg", partition_by=("topic", "night"),
                                          path=str(tmp_path / "warehouse"), **table))


def test_every_reader_sees_every_column_of_both_schemas_and_every_alert_once(
    spark: SparkSession, broker: LocalKafka, new_topic, tmp_path: Path,  # noqa: ANN001
) -> None:
    sn, old = new_topic("fink_sn_candidates_ztf"), new_topic("fink_0p2")
    client = broker.client_config(USER)
    config = iceberg_config(broker, tmp_path, [sn, old])
    first = publish(client, old, [sample("ztf-0p2")], ZTF)  # Fink's 2019 schema: no Fink science columns
    printed = run_job(spark, config)
    assert f"--- batch 0: {first} alerts, 0 quarantined ---" in printed  # the console counts the table's write
    warehouse = tmp_path / "warehouse"
    columns_before = set(user_catalog(warehouse).load_table("ztf.alerts").schema().column_names)
    second = publish(client, sn, [sample("ztf-2026")], ZTF)  # the 2026 schema: Fink's classifiers and more
    printed = run_job(spark, config)
    assert f"{second} alerts" in printed and "0 quarantined" in printed
    assert not (warehouse / "_fink_spark").exists()  # no side file: the table holds its schema

    # Spark's own Iceberg source, by the table's metadata file: no catalog, no fink-spark code
    table = spark.read.format("iceberg").load(metadata_location(warehouse))
    rows = [row.asDict(recursive=True) for row in table.collect()]
    assert Counter(row["topic"] for row in rows) == {old: first, sn: second}
    check_alerts(rows, read_alerts(sample("ztf-0p2")), "candid", old, ztf_mjd)
    check_alerts(rows, read_alerts(sample("ztf-2026")), "candid", sn, ztf_mjd)
    spark_columns = set(table.columns)
    assert {"finkclass", "rf_snia_vs_nonia", "candidate", "prv_candidates", "obs_time"} <= spark_columns
    assert spark_columns > {column.split(".")[0] for column in columns_before}  # columns were added

    # pyiceberg to pandas and Arrow, polars, DuckDB over the Arrow data
    import duckdb  # here: 2 s of every test run's collection otherwise
    import polars as pl

    iceberg_table = user_catalog(warehouse).load_table("ztf.alerts")
    frame = iceberg_table.scan().to_pandas()
    arrow = iceberg_table.scan().to_arrow()
    polars = pl.scan_iceberg(iceberg_table).collect()
    duck = duckdb.sql("SELECT topic, count(*) AS n, count(DISTINCT candid) AS ids, count(finkclass) AS classified "
                      "FROM arrow GROUP BY topic ORDER BY topic").fetchall()
    for reader_columns in (set(frame.columns), set(arrow.column_names), set(polars.columns)):
        assert reader_columns == spark_columns
    assert len(frame) == arrow.num_rows == polars.height == first + second
    assert sorted(duck) == sorted([(old, first, first, 0), (sn, second, second, second)])
    assert frame.groupby("topic")["candid"].nunique().to_dict() == {old: first, sn: second}
    assert polars.filter(pl.col("topic") == sn)["finkclass"].null_count() == 0

    # Iceberg's schema history holds both schemas; the change is in a snapshot's summary
    assert len(iceberg_table.schemas()) >= 2
    changes = [snapshot.summary.additional_properties.get("fink-spark.schema-change")
               for snapshot in iceberg_table.snapshots()]
    recorded = [change for change in changes if change]
    assert len(recorded) == 1 and "finkclass" in recorded[0]


def test_a_night_selection_reads_only_that_nights_files(
    spark: SparkSession, broker: LocalKafka, new_topic, tmp_path: Path,  # noqa: ANN001
) -> None:
    topic = new_topic("fink_nights")
    client = broker.client_config(USER)
    publish(client, topic, [sample("ztf-0p2"), sample("ztf-2026")], ZTF)  # alerts of 2019 and of 2026
    run_job(spark, iceberg_config(broker, tmp_path, [topic]))
    iceberg_table = user_catalog(tmp_path / "warehouse").load_table("ztf.alerts")
    everything = list(iceberg_table.scan().plan_files())
    nights = Counter(row["obs_time"].date() for row in iceberg_table.scan(selected_fields=("obs_time",)).to_arrow().to_pylist())
    night, count = sorted(nights.items())[0]
    start = datetime(night.year, night.month, night.day, tzinfo=timezone.utc)
    one_night = And(GreaterThanOrEqual("obs_time", start.isoformat()),
                    LessThan("obs_time", (start + timedelta(days=1)).isoformat()))
    planned = list(iceberg_table.scan(row_filter=one_night).plan_files())
    assert len(nights) >= 2 and len(everything) >= len(nights)
    assert 0 < len(planned) < len(everything)
    assert iceberg_table.scan(row_filter=one_night).to_arrow().num_rows == count
    table = spark.read.format("iceberg").load(metadata_location(tmp_path / "warehouse"))
    selected = table.where(f"obs_time >= '{start.isoformat()}' AND obs_time < '{(start + timedelta(days=1)).isoformat()}'")
    assert selected.count() == count
    # fink-spark's own readers take the warehouse too: explore (pyiceberg) and read_table (Spark)
    out = io.StringIO()
    explore(["show", str(tmp_path / "warehouse"), "--night", night.isoformat(), "--format", "csv", "--limit", "1000"],
            out=out)
    assert len(list(csv.DictReader(io.StringIO(out.getvalue())))) == count
    assert read_table(spark, str(tmp_path / "warehouse")).count() == sum(nights.values())
    # ... and reprocessing takes the table as an input, like a Parquet folder
    again = parse_config({"survey": "ztf", "output": {"table": {"path": str(tmp_path / "again"),
                                                                "checkpoint": str(tmp_path / "again_chk")}}},
                         kafka_required=False)
    assert reprocess(spark, again, [str(tmp_path / "warehouse")], [], "unused") == sum(nights.values())
    copied = read_table(spark, str(tmp_path / "again")).select("topic", "candid", "obs_time").collect()
    original = read_table(spark, str(tmp_path / "warehouse")).select("topic", "candid", "obs_time").collect()
    assert sorted(copied) == sorted(original)


def test_parquet_options_on_an_iceberg_output_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'output.table.quarantine_path' does not apply to output.format iceberg"):
        parse_config({"survey": "ztf", "output": {"table": {"path": "w", "checkpoint": "c", "quarantine_path": "q"}}},
                     base=tmp_path, kafka_required=False)


def test_maintain_refuses_an_orphan_age_iceberg_would_refuse(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    config = tmp_path / "job.yaml"
    config.write_text("survey: ztf\noutput:\n  table: {path: w, checkpoint: c}\n")
    with pytest.raises(SystemExit) as stopped:
        cli(["maintain", "--config", str(config), "--orphan-age-hours", "1"])
    assert stopped.value.code == 2
    assert "--orphan-age-hours 1 is too short" in capsys.readouterr().err
