"""Filters select exactly what an independent fastavro reference selects from the same alerts,
in the streamed table. Fink's own presets are checked against Fink's own code in
test_fink_filters.py."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import USER, job_config, kept_in_memory, read_table, run_job, sample
from reference import read_alerts
from test_iceberg import metadata_location, user_catalog

from fink_spark.errors import ConfigError
from fink_spark.paths import SCHEMAS_DIR
from fink_spark.surveys import LSST, ZTF
from fink_spark.table.catalog import Tables
from fink_spark.table.maintain import Maintenance, maintain
from fink_spark.testing.publisher import publish
from fink_spark.transform.filters import apply_filters, check_filters, parse_filters
from fink_spark.transform.presets import EXTRAGALACTIC_CLASSES

# 2026 alerts (all cross-matched 'Unknown') and 2019 ones (RRLyr), in one topic.
ALERTS = read_alerts(sample("ztf-2026")) + read_alerts(sample("ztf-0p2"))


@pytest.fixture(scope="module")
def kept(spark):  # noqa: ANN001, ANN201
    """The sample ZTF alerts as the job keeps them (no filter), in one table of both schemas."""
    return kept_in_memory(spark, ["ztf-2026", "ztf-0p2"], ZTF, str(SCHEMAS_DIR / "ztf" / "fink_ztf_transfer_2026-03.avsc"))


def selected(kept, items: list) -> set[int]:  # noqa: ANN001
    filters = parse_filters(items, ZTF)
    check_filters(filters, kept)
    return {row.candid for row in kept.transform(apply_filters(filters)).select("candid").collect()}


def reference(condition) -> set[int]:  # noqa: ANN001
    return {alert["candid"] for alert in ALERTS if condition(alert)}


def separation_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Angle between two directions, from their unit vectors (independent of the job's haversine)."""
    def unit(ra: float, dec: float) -> tuple[float, float, float]:
        ra, dec = math.radians(ra), math.radians(dec)
        return (math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec))
    a, b = unit(ra1, dec1), unit(ra2, dec2)
    return math.degrees(math.acos(max(-1.0, min(1.0, sum(x * y for x, y in zip(a, b))))))


def jd(alert: dict) -> float:
    return alert["candidate"]["jd"]


CENTER = ALERTS[3]["candidate"]
TIMES = sorted(jd(alert) for alert in ALERTS)


@pytest.mark.parametrize(
    ("items", "condition"),
    [
        ([{"preset": "cone", "ra": CENTER["ra"], "dec": CENTER["dec"], "radius": 20.0}],
         lambda a: separation_deg(a["candidate"]["ra"], a["candidate"]["dec"], CENTER["ra"], CENTER["dec"]) <= 20.0),
        ([{"preset": "time_window", "start": TIMES[5], "end": TIMES[20] - 2400000.5}],
         lambda a: TIMES[5] <= jd(a) < TIMES[20]),
        ([{"preset": "time_window", "start": "2026-03-22T08:00:00"}], lambda a: jd(a) >= 2461121.5 + 8 / 24),
        ([{"preset": "magnitude", "max": 18.0}], lambda a: a["candidate"]["magpsf"] <= 18.0),
        ([{"preset": "min_reliability", "value": 0.9}], lambda a: (a["candidate"]["drb"] or a["candidate"]["rb"]) >= 0.9),
        ([{"preset": "extragalactic"}], lambda a: a["cdsxmatch"] in EXTRAGALACTIC_CLASSES),
        (["candidate.magpsf < 19.5 AND candidate.ndethist >= 3"],
         lambda a: a["candidate"]["magpsf"] < 19.5 and a["candidate"]["ndethist"] >= 3),
        (["finkclass = 'SN candidate'", {"preset": "magnitude", "min": 17.0}],
         lambda a: a.get("finkclass") == "SN candidate" and a["candidate"]["magpsf"] >= 17.0),
    ],
)
def test_filter_selects_what_the_reference_selects(kept, items, condition) -> None:  # noqa: ANN001
    expected = reference(condition)
    assert 0 < len(expected) < len(ALERTS), "a filter that keeps all or nothing proves little"
    assert selected(kept, items) == expected


def test_not_sso_keeps_alerts_with_no_known_solar_system_object(kept) -> None:  # noqa: ANN001
    # No sample alert lies near a known Solar System object (ssdistnr -999, roid 0): all are kept.
    assert all(a["candidate"]["ssdistnr"] < 0 and a.get("roid", 0) == 0 for a in ALERTS)
    assert selected(kept, [{"preset": "not_sso", "radius": 5}]) == reference(lambda a: True)
    (lsst,) = parse_filters([{"preset": "not_sso"}], LSST)
    assert lsst.condition == "coalesce(diaSource.ssObjectId, 0) = 0 AND ssSource.ssObjectId IS NULL"


def test_cone_across_ra_zero_and_at_the_pole(spark) -> None:  # noqa: ANN001
    """The cone evaluated by Spark on positions either side of ra = 0 and near a pole,
    against the great-circle distance computed here."""
    points = [(1, 0.2, 0.0), (2, 359.5, 0.0), (3, 0.45, 0.2), (4, 1.0, 0.0), (5, 180.0, 0.0), (6, 359.9, 0.6),
              (7, 10.0, 89.8), (8, 190.0, 89.8), (9, 100.0, 89.0)]
    alerts = spark.createDataFrame([(candid, (ra, dec)) for candid, ra, dec in points],
                                   "candid long, candidate struct<ra: double, dec: double>")

    def inside(ra: float, dec: float, center: tuple[float, float], radius: float) -> bool:
        ra0, dec0 = map(math.radians, center)
        ra1, dec1 = math.radians(ra), math.radians(dec)
        cosine = math.sin(dec0) * math.sin(dec1) + math.cos(dec0) * math.cos(dec1) * math.cos(ra1 - ra0)
        return math.degrees(math.acos(min(1.0, cosine))) <= radius

    for center, radius in (((359.9, 0.0), 0.5), ((0.0, 90.0), 0.5)):
        filters = parse_filters([{"preset": "cone", "ra": center[0], "dec": center[1], "radius": radius}], ZTF)
        kept = {row.candid for row in alerts.transform(apply_filters(filters)).collect()}
        expected = {candid for candid, ra, dec in points if inside(ra, dec, center, radius)}
        assert kept == expected and expected, (center, kept)


@pytest.mark.parametrize(
    ("items", "survey", "message"),
    [
        (["candidate.magpsff < 19"], ZTF, "unknown column candidate.magpsff; did you mean candidate.magpsf"),
        (["rf_snia_vs_noni > 0.5"], ZTF, "unknown column rf_snia_vs_noni; did you mean rf_snia_vs_nonia"),
        (["candidate.magpsf <<< 19"], ZTF, "filters[0] (candidate.magpsf <<< 19): syntax error"),
        (["candidate.magpsf + 1"], ZTF, "the condition must be true or false, not a double"),
        ([{"preset": "magnitude", "max": 19}], LSST, "filters[0]: the magnitude preset does not apply to LSST alerts."),
        ([{"preset": "cone", "ra": 10, "dec": 95, "radius": 1}], ZTF, "filters[0].dec must be between -90 and 90, not 95"),
        ([{"preset": "cone", "ra": 10, "dec": 5}], ZTF, "filters[0].radius is required."),
        ([{"preset": "conee"}], ZTF, "filters[0].preset is 'conee'; known presets: cone, early_sn_candidate, extragalactic"),
        ([{"preset": "not_sso", "radious": 3}], ZTF, "Unknown key 'filters[0].radious'. Did you mean 'filters[0].radius'?"),
        ([{"preset": "time_window", "start": "last tuesday"}], ZTF, "filters[0].start must be an ISO date"),
    ],
)
def test_bad_filters_are_clear_errors(kept, items, survey, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as error:
        check_filters(parse_filters(items, survey), kept)
    assert message in str(error.value)


def test_streaming_job_keeps_only_alerts_passing_the_filters(spark, broker, new_topic, tmp_path: Path) -> None:  # noqa: ANN001
    topic = new_topic("fink_filtered_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-2026")], ZTF)
    items = [{"preset": "magnitude", "max": 18.0}, {"preset": "not_sso"}]
    output = run_job(spark, job_config(broker, tmp_path, [topic], filters=items))
    expected = {a["candid"] for a in ALERTS[:31] if a["candidate"]["magpsf"] <= 18.0}
    rows = spark.read.parquet(str(tmp_path / "alerts")).select("candid").collect()
    assert sorted(row.candid for row in rows) == sorted(expected)
    assert f"--- batch 0: {len(expected)} alerts, {31 - len(expected)} rejected by filters, 0 quarantined ---" in output


def test_sn_candidate_preset_is_selective_on_the_samples(kept) -> None:  # noqa: ANN001
    chosen = selected(kept, [{"preset": "sn_candidate"}])
    assert 0 < len(chosen) < len(ALERTS)
    with pytest.raises(ConfigError, match="one of Fink's ZTF livestream topics; it does not apply to LSST"):
        parse_filters([{"preset": "kn_candidate"}], LSST)


def test_rejected_ids_name_the_first_filter_that_rejected_them(spark, broker, new_topic, tmp_path: Path) -> None:  # noqa: ANN001
    topic = new_topic("fink_rejected_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-2026")], ZTF)
    items = [{"preset": "magnitude", "max": 18.0}, "candidate.ndethist > 10"]
    run_job(spark, job_config(broker, tmp_path, [topic], filters=items, parquet={"rejected_path": str(tmp_path / "rejected")}))
    rejected = {row.candid: (row.objectId, row.rejected_by) for row in spark.read.parquet(str(tmp_path / "rejected")).collect()}
    expected = {}
    for alert in ALERTS[:31]:
        if alert["candidate"]["magpsf"] > 18.0:
            expected[alert["candid"]] = (alert["objectId"], "filters[0] (magnitude)")
        elif alert["candidate"]["ndethist"] <= 10:
            expected[alert["candid"]] = (alert["objectId"], "filters[1] (candidate.ndethist > 10)")
    assert rejected == expected and 0 < len(expected) < 31
    kept_ids = {row.candid for row in spark.read.parquet(str(tmp_path / "alerts")).select("candid").collect()}
    assert kept_ids == {a["candid"] for a in ALERTS[:31]} - set(expected)


def test_deduplicate_keeps_one_row_per_alert_with_its_topics(spark, broker, new_topic, tmp_path: Path) -> None:  # noqa: ANN001
    first, second = new_topic("fink_dedup_a_ztf"), new_topic("fink_dedup_b_ztf")
    for topic in (first, second):
        publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF)
    config = job_config(broker, tmp_path, [first, second], parquet={"deduplicate": "2 seconds"})
    run_job(spark, config)
    time.sleep(5)  # later alerts move the stream past the first ones: they can be written
    publish(broker.client_config(USER), first, [sample("ztf-raw-3.3")], ZTF)
    run_job(spark, config)
    run_job(spark, config)
    rows = spark.read.parquet(str(tmp_path / "alerts")).collect()
    originals = {a["candid"] for a in read_alerts(sample("ztf-0p2"))}
    merged = {row.candid: row.topics for row in rows if row.candid in originals}
    assert merged == {candid: sorted([first, second]) for candid in originals}
    assert len([row for row in rows if row.candid in originals]) == 4
    assert "topic" not in spark.read.parquet(str(tmp_path / "alerts")).columns


def test_an_iceberg_table_merges_copies_into_its_rows_in_the_one_query(spark, broker, new_topic, tmp_path: Path) -> None:  # noqa: ANN001
    """Copies in one micro-batch make one row; a copy in a later run adds its topic to that
    row; new alerts are inserted; a replayed batch changes nothing. No second query reads Kafka."""
    first, second, third = (new_topic(f"fink_merge_{name}_ztf") for name in "abc")
    client = broker.client_config(USER)
    for topic in (first, second):
        publish(client, topic, [sample("ztf-0p2")], ZTF)
    config = job_config(broker, tmp_path, [first, second, third])
    config = replace(config, output=replace(config.output, format="iceberg", partition_by=("night",),
                                            path=str(tmp_path / "warehouse"), deduplicate_gap="1 hour"))
    originals = {alert["candid"] for alert in read_alerts(sample("ztf-0p2"))}
    warehouse = tmp_path / "warehouse"

    def rows() -> dict[int, list[str]]:
        table = read_table(warehouse, ["candid", "topics"])  # pyiceberg, as a user reads the table
        ids = table.column("candid").to_pylist()
        assert len(ids) == len(set(ids)), "one row per alert"
        return dict(zip(ids, table.column("topics").to_pylist()))

    run_job(spark, config)
    assert rows() == {candid: sorted([first, second]) for candid in originals}
    publish(client, third, [sample("ztf-0p2")], ZTF)  # the same alerts, later, in another topic
    publish(client, first, [sample("ztf-2026")], ZTF)  # and new ones, of a schema with more columns
    run_job(spark, config)
    newer = {alert["candid"] for alert in read_alerts(sample("ztf-2026"))}
    expected = {**{candid: sorted([first, second, third]) for candid in originals}, **{candid: [first] for candid in newer}}
    assert rows() == expected
    table = user_catalog(warehouse).load_table("ztf.alerts")  # evolved, then merged into again
    assert any("finkclass" in (snapshot.summary.additional_properties.get("fink-spark.schema-change") or "")
               for snapshot in table.snapshots())
    assert table.properties["write.spark.accept-any-schema"] == "false"
    assert not (tmp_path / "checkpoints" / "deduplicated").exists()
    import polars as pl  # here: 2 s of every test run's collection otherwise

    # the copies merged into earlier rows are delete files: other readers apply them too
    polars = pl.scan_iceberg(user_catalog(warehouse).load_table("ztf.alerts")).select("candid").collect()
    assert polars.height == polars["candid"].n_unique() == len(expected)
    assert spark.read.format("iceberg").load(metadata_location(warehouse)).count() == len(expected)

    commits = tmp_path / "checkpoints" / "alerts" / "commits"  # a crash after the merge, before Spark's commit
    last = max(int(path.name) for path in commits.iterdir() if path.name.isdigit())
    for name in (str(last), f".{last}.crc"):
        (commits / name).unlink()
    snapshots = len(user_catalog(warehouse).load_table("ztf.alerts").snapshots())
    run_job(spark, config)
    assert rows() == expected
    assert len(user_catalog(warehouse).load_table("ztf.alerts").snapshots()) == snapshots

    # maintenance beside the stream leaves the files the stream may still merge into
    files = user_catalog(warehouse).load_table("ztf.alerts").inspect.files().to_pylist()
    by_night = Counter(str(file["partition"]) for file in files if file["content"] == 0)
    assert max(by_night.values()) >= 2, "data files that maintenance would compact otherwise"
    done = maintain(spark, Tables.of(config.output, "ztf"), Maintenance(), ZTF)
    assert done["fink.ztf.alerts"]["files rewritten"] == 0
    assert rows() == expected


LSST_ALERTS = read_alerts(sample("lsst-2026")) + read_alerts(sample("lsst-rubin-9.0"))


@pytest.fixture(scope="module")
def kept_lsst(spark):  # noqa: ANN001, ANN201
    """The sample LSST alerts (Fink 2026 and Rubin 9.0 schemas) as the job keeps them."""
    return kept_in_memory(spark, ["lsst-2026", "lsst-rubin-9.0"], LSST)


@pytest.mark.parametrize(
    ("items", "condition"),
    [
        ([{"preset": "not_sso"}], lambda a: not a["diaSource"]["ssObjectId"] and not (a.get("ssSource") or {}).get("ssObjectId")),
        ([{"preset": "flux", "min": 3000.0, "max": 12000.0}], lambda a: 3000.0 <= a["diaSource"]["psfFlux"] <= 12000.0),
        ([{"preset": "min_reliability", "value": 0.8}], lambda a: a["diaSource"]["reliability"] >= 0.8),
        ([{"preset": "cone", "ra": 63.0, "dec": -47.2, "radius": 1.0}],
         lambda a: separation_deg(a["diaSource"]["ra"], a["diaSource"]["dec"], 63.0, -47.2) <= 1.0),
        (["diaSource.band = 'i' AND diaSource.snr > 10"], lambda a: a["diaSource"]["band"] == "i" and a["diaSource"]["snr"] > 10),
    ],
)
def test_lsst_filters_select_what_the_reference_selects(kept_lsst, items, condition) -> None:  # noqa: ANN001
    filters = parse_filters(items, LSST)
    check_filters(filters, kept_lsst)
    chosen = {row.diaSourceId for row in kept_lsst.transform(apply_filters(filters)).select("diaSourceId").collect()}
    expected = {a["diaSourceId"] for a in LSST_ALERTS if condition(a)}
    assert 0 < len(expected) < len(LSST_ALERTS)
    assert chosen == expected
