"""An independent reference: alerts decoded by fastavro from the sample files, and the
comparison of Spark's output with them field by field."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro

JD_UNIX_EPOCH = 2440587.5


def read_alerts(folder: Path) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.avro")):
        with path.open("rb") as handle:
            alerts += list(fastavro.reader(handle))
    return alerts


def ztf_mjd(alert: dict[str, Any]) -> float:
    """A ZTF alert's time of observation, as a modified Julian date."""
    return alert["candidate"]["jd"] - 2400000.5


def utc_of_jd(jd: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(days=jd - JD_UNIX_EPOCH)


def assert_same_value(spark_value: Any, reference: Any, where: str, every_field: bool = False) -> None:
    """Spark's value equals fastavro's; fields the writer lacked must be null in Spark.

    Records compare by field name, over the reader's (Spark's) fields: this is what Avro
    schema resolution promises, checked independently of Spark's Avro library. With
    `every_field`, each of fastavro's fields must also be one of Spark's: no value dropped.
    """
    if isinstance(spark_value, dict):
        assert isinstance(reference, dict) or reference is None, f"{where}: {reference!r} is not a record"
        if every_field and reference is not None:
            missing = set(reference) - set(spark_value)
            assert not missing, f"{where}: fastavro's fields {sorted(missing)} are not in the table"
        for name, value in spark_value.items():
            assert_same_value(value, (reference or {}).get(name), f"{where}.{name}", every_field)
        return
    if isinstance(spark_value, list):
        assert isinstance(reference, list), f"{where}: expected a list, fastavro has {reference!r}"
        assert len(spark_value) == len(reference), f"{where}: {len(spark_value)} items != {len(reference)}"
        for index, (item, expected) in enumerate(zip(spark_value, reference)):
            assert_same_value(item, expected, f"{where}[{index}]", every_field)
        return
    if isinstance(spark_value, (bytes, bytearray)):
        assert reference is not None and bytes(spark_value) == bytes(reference), f"{where}: bytes differ"
        return
    if isinstance(spark_value, float) and isinstance(reference, float) and math.isnan(reference):
        assert math.isnan(spark_value), f"{where}: {spark_value} != NaN"
        return
    if isinstance(spark_value, datetime) and isinstance(reference, datetime):
        assert spark_value.replace(tzinfo=timezone.utc) == reference, f"{where}: {spark_value} != {reference}"
        return
    assert spark_value == reference, f"{where}: Spark has {spark_value!r}, fastavro {reference!r}"


KAFKA_METADATA = {"topic", "kafka_partition", "kafka_offset", "kafka_timestamp", "ingest_time"}
POSITION = {"ra", "dec", "_healpix_29"}
OUTPUT_ONLY = KAFKA_METADATA | POSITION | {"year", "month", "day", "obs_time"}  # columns the job adds to the alert's


def position_of(alert: dict[str, Any]) -> tuple[float | None, float | None, int | None]:
    """An alert's ra, dec (ZTF's candidate, LSST's diaSource) and its HEALPix cell at
    order 29 by cdshealpix, the library HATS and LSDB index with."""
    import astropy.units as u
    from cdshealpix.nested import lonlat_to_healpix

    source = alert.get("candidate") or alert.get("diaSource") or {}
    ra, dec = source.get("ra"), source.get("dec")
    if ra is None or dec is None:
        return None, None, None
    cell = lonlat_to_healpix([ra % 360] * u.deg, [dec] * u.deg, 29)[0]
    return float(ra), float(dec), int(cell)


def check_alerts(rows: list[dict], reference: list[dict], id_column: str, topic: str, mjd_of) -> None:  # noqa: ANN001
    """Every field of every reference alert is in the topic's rows, once."""
    by_id = {row[id_column]: row for row in rows if row["topic"] == topic}
    assert len(by_id) == len([row for row in rows if row["topic"] == topic]) == len(reference)
    for alert in reference:
        row = by_id[alert[id_column]]
        fields = {name: value for name, value in row.items() if name not in OUTPUT_ONLY}
        # An alert field named like a metadata column is the table's alert_<name>.
        expected = {f"alert_{k}" if k in KAFKA_METADATA else k: v for k, v in alert.items() if k not in ("year", "month", "day")}
        assert_same_value(fields, expected, str(alert[id_column]))
        night = utc_of_jd(mjd_of(alert) + 2400000.5)
        assert (row["year"], row["month"], row["day"]) == (night.year, night.month, night.day)
        assert abs(row["obs_time"].replace(tzinfo=timezone.utc) - night) < timedelta(milliseconds=1)
        assert row["ingest_time"] is not None
        assert (row["ra"], row["dec"], row["_healpix_29"]) == position_of(alert)
