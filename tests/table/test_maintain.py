"""`maintain` on a table written before fink-spark kept positions: the rows get them once,
from their own coordinates, and the closed nights are rewritten sorted on the sky."""

from __future__ import annotations

import json
from pathlib import Path

import fastavro
import pyarrow.parquet as pq
from conftest import sample
from pyspark.sql import SparkSession
from reference import position_of

from fink_spark.config.job import parse_config
from fink_spark.run.reprocess import reprocess
from fink_spark.surveys import ZTF
from fink_spark.table.catalog import Tables
from fink_spark.table.maintain import Maintenance, maintain
from fink_spark.table.warehouse import load_pyiceberg
from fink_spark.testing.publisher import read_saved_alerts, replicate


def test_maintain_gives_old_rows_their_position_and_sorts_closed_nights_on_the_sky(spark: SparkSession, tmp_path: Path) -> None:
    saved = next(read_saved_alerts([sample("ztf-2026")]))
    schema = fastavro.parse_schema(json.loads(saved.schema_text))
    alerts, folders = {}, [tmp_path / "old", tmp_path / "new"]
    for copy in range(4):  # one file for the old version's run, three for the new one's: four files of one night
        records = [replicate(record, ZTF, copy) for record in saved.records]
        alerts.update({record["candid"]: record for record in records})
        folder = folders[min(copy, 1)]
        folder.mkdir(exist_ok=True)
        with (folder / f"part-{copy}.avro").open("wb") as handle:
            fastavro.writer(handle, schema, records)
    warehouse = tmp_path / "warehouse"
    config = parse_config({"survey": "ztf", "output": {"table": {"path": str(warehouse), "checkpoint": str(tmp_path / "chk")}}},
                          kafka_required=False)
    name = Tables.of(config.output, "ztf").name("alerts")
    assert reprocess(spark, config, [str(folders[0])], [], "fink_old_ztf") == len(saved.records)
    # as a table of an earlier version: no position columns
    spark.sql(f"ALTER TABLE {name} WRITE UNORDERED")
    spark.sql(f"ALTER TABLE {name} DROP COLUMNS (ra, dec, _healpix_29)")
    # the new version's next run adds them, for its own rows
    later = parse_config({"survey": "ztf", "output": {"table": {"path": str(warehouse), "checkpoint": str(tmp_path / "chk2")}}},
                         kafka_required=False)
    assert reprocess(spark, later, [str(folders[1])], [], "fink_old_ztf", files_per_batch=1) == 3 * len(saved.records)
    table = load_pyiceberg(str(warehouse))
    assert sum(row["_healpix_29"] is None for row in table.scan(selected_fields=("_healpix_29",)).to_arrow().to_pylist()) \
        == len(saved.records)
    files_before = len(list(table.scan().plan_files()))
    assert files_before >= 4

    done = maintain(spark, Tables.of(config.output, "ztf"), Maintenance(), ZTF)[name]
    assert done["positions added"] == len(saved.records)
    assert done["files rewritten"] >= files_before
    table = load_pyiceberg(str(warehouse))
    rows = table.scan(selected_fields=("candid", "ra", "dec", "_healpix_29")).to_arrow().to_pylist()
    assert sorted(row["candid"] for row in rows) == sorted(alerts)
    for row in rows:
        assert (row["ra"], row["dec"], row["_healpix_29"]) == position_of(alerts[row["candid"]])
    for task in table.scan().plan_files():  # a closed night: its files sorted on the sky
        cells = pq.read_table(task.file.file_path.removeprefix("file:"), columns=["_healpix_29"])["_healpix_29"].to_pylist()
        assert cells == sorted(cells)
    assert maintain(spark, Tables.of(config.output, "ztf"), Maintenance(), ZTF)[name]["positions added"] == 0


def test_a_closed_night_is_sorted_while_its_files_overlap_on_the_sky() -> None:
    from datetime import date, datetime

    from fink_spark.table.maintain import nights_to_sort

    def at(day: int, hour: int = 3) -> datetime:
        return datetime(2026, 3, day, hour)

    files = [
        ('{"topic":"a","night":"2026-03-20"}', 10, 500, at(20), at(20, 9)),  # two files over the same cells
        ('{"topic":"a","night":"2026-03-20"}', 20, 900, at(20), at(20, 8)),
        ('{"topic":"a","night":"2026-03-21"}', 10, 500, at(21), at(21)),  # sorted already: apart, or touching
        ('{"topic":"a","night":"2026-03-21"}', 500, 900, at(21), at(21)),
        ('{"topic":"b","night":"2026-03-21"}', 10, 500, at(21), at(21)),  # another topic's one file
        ('{"topic":"a","night":"2026-03-22"}', None, None, at(22), at(22)),  # files that do not say where they lie
        ('{"topic":"a","night":"2026-03-22"}', 600, 900, at(22), at(22)),
        ('{"topic":"a","night":"2026-03-23"}', 10, 500, at(23), at(23)),  # tonight: only compacted
        ('{"topic":"a","night":"2026-03-23"}', 20, 900, at(23), at(23)),
    ]
    assert nights_to_sort(files, date(2026, 3, 23)) == [(date(2026, 3, 20), date(2026, 3, 21)),
                                                        (date(2026, 3, 22), date(2026, 3, 23))]
    assert nights_to_sort(files, date(2026, 3, 24)) == [(date(2026, 3, 20), date(2026, 3, 21)),
                                                        (date(2026, 3, 22), date(2026, 3, 24))]
