"""The job's transformations on small in-memory DataFrames, without a broker: decode and
reject reasons, filters, de-duplication and the console's columns. Each runs in seconds;
the end-to-end tests run the same transformations through Kafka."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from astropy.time import Time
from conftest import kafka_frame, kafka_messages, sample
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from fink_spark.run.pipeline import kept_alerts
from fink_spark.schema.table import TableSchema
from fink_spark.schema.writer import WriterSchemas
from fink_spark.sink.console import console_values
from fink_spark.surveys import LSST, ZTF, Survey
from fink_spark.testing.publisher import read_saved_alerts
from fink_spark.transform.decode import decode_records
from fink_spark.transform.dedup import deduplicate, merge_copies
from fink_spark.transform.filters import first_rejection, parse_filters

TOPIC = "fink_sn_candidates_ztf"
STAMP = datetime(2026, 3, 22, tzinfo=timezone.utc)


def decoded_sample(spark: SparkSession, folder: str, survey: Survey, extra: list[tuple] = ()) -> tuple[DataFrame, list[dict]]:
    """A sample's alerts as Kafka records, then `extra` (key, value) records, decoded."""
    saved = next(read_saved_alerts([sample(folder)]))
    records = kafka_messages(spark, saved.schema_text, saved.records, TOPIC)
    if extra:
        start = len(saved.records)
        rows = [(key, value, TOPIC, 0, start + index, STAMP) for index, (key, value) in enumerate(extra)]
        records = records.unionByName(kafka_frame(spark, rows))
    writers = WriterSchemas(survey)
    writers.learn(saved.schema_text.encode())
    return records.transform(decode_records(writers, TableSchema.first(saved.schema_text, "test"), survey)), saved.records


def test_every_reject_reason(spark: SparkSession) -> None:
    schema_key = next(read_saved_alerts([sample("ztf-2026")])).schema_text.encode()
    extra = [
        (schema_key, None),
        (schema_key, b""),
        (schema_key, b"\x00\x01not avro"),
        (None, b"\x02\x04"),
        (b"9.9_1.0", b"\x02\x04"),
        (b"hello", b"\x02\x04"),
    ]
    decoded, alerts = decoded_sample(spark, "ztf-2026", ZTF, extra)
    n = len(alerts)
    expected = spark.createDataFrame(
        [(offset, None) for offset in range(n)] + [
            (n, "null value"),
            (n + 1, "empty value"),
            (n + 2, "value does not decode with the writer schema its key names"),
            (n + 3, "no key: the writer schema is unknown"),
            (n + 4, "key names schema version 9.9_1.0, which fink-spark does not bundle"),
            (n + 5, "key is neither a JSON Avro schema nor a schema version string"),
        ],
        "offset long, reject_reason string",
    )
    assertDataFrameEqual(decoded.select("offset", "reject_reason"), expected)
    assertDataFrameEqual(decoded.where("reject_reason IS NULL").select("alert.candid"),
                         spark.createDataFrame([(a["candid"],) for a in alerts], "candid long"))


def test_filters_and_first_rejection_agree_with_the_alerts(spark: SparkSession) -> None:
    decoded, alerts = decoded_sample(spark, "ztf-2026", ZTF)
    filters = parse_filters([{"preset": "magnitude", "min": 16.0, "max": 19.0}, "candidate.ndethist >= 3"], ZTF)
    kept = decoded.transform(kept_alerts(ZTF, filters))
    passing = [a for a in alerts if 16.0 <= a["candidate"]["magpsf"] <= 19.0 and a["candidate"]["ndethist"] >= 3]
    assert 0 < len(passing) < len(alerts)
    assertDataFrameEqual(kept.select("candid"), spark.createDataFrame([(a["candid"],) for a in passing], "candid long"))

    def first_failed(alert: dict) -> str:
        if not 16.0 <= alert["candidate"]["magpsf"] <= 19.0:
            return "filters[0] (magnitude)"
        return "filters[1] (candidate.ndethist >= 3)"

    rejected = decoded.transform(kept_alerts(ZTF, ())).transform(first_rejection(filters, ZTF))
    expected = [(a["candid"], a["objectId"], first_failed(a)) for a in alerts if a not in passing]
    assertDataFrameEqual(rejected.select("candid", "objectId", "rejected_by"),
                         spark.createDataFrame(expected, "candid long, objectId string, rejected_by string"))


def test_deduplicate_merges_the_copies_of_an_alert_within_the_gap(spark: SparkSession) -> None:
    minute = timedelta(minutes=1)
    rows = [  # candid, topic, Kafka time
        (1, "fink_sn_candidates_ztf", STAMP),
        (1, "fink_early_sn_candidates_ztf", STAMP + minute),
        (2, "fink_sn_candidates_ztf", STAMP + 2 * minute),
        (1, "fink_kn_candidates_ztf", STAMP + 120 * minute),  # long after: a new row
    ]
    alerts = spark.createDataFrame(
        [(candid, f"ZTF26aa{candid}", topic, 0, offset, moment, moment) for offset, (candid, topic, moment) in enumerate(rows)],
        "candid long, objectId string, topic string, kafka_partition int, kafka_offset long, "
        "kafka_timestamp timestamp, ingest_time timestamp",
    )
    merged = alerts.transform(deduplicate(ZTF, "10 minutes")).select("candid", "objectId", "topics", "kafka_timestamp")
    expected = spark.createDataFrame(
        [
            (1, "ZTF26aa1", ["fink_early_sn_candidates_ztf", "fink_sn_candidates_ztf"], STAMP),
            (2, "ZTF26aa2", ["fink_sn_candidates_ztf"], STAMP + 2 * minute),
            (1, "ZTF26aa1", ["fink_kn_candidates_ztf"], STAMP + 120 * minute),
        ],
        "candid long, objectId string, topics array<string>, kafka_timestamp timestamp",
    )
    assertDataFrameEqual(merged, expected)
    # one micro-batch's copies, for an Iceberg table's MERGE: one row per id, whatever the times
    in_batch = alerts.transform(merge_copies(ZTF)).select("candid", "objectId", "topics", "kafka_timestamp")
    assertDataFrameEqual(in_batch, spark.createDataFrame([
        (1, "ZTF26aa1", ["fink_early_sn_candidates_ztf", "fink_kn_candidates_ztf", "fink_sn_candidates_ztf"], STAMP),
        (2, "ZTF26aa2", ["fink_sn_candidates_ztf"], STAMP + 2 * minute),
    ], "candid long, objectId string, topics array<string>, kafka_timestamp timestamp"))


def test_console_columns_show_the_alerts_values(spark: SparkSession) -> None:
    decoded, alerts = decoded_sample(spark, "lsst-2026", LSST)
    kept = decoded.transform(kept_alerts(LSST, ())).orderBy("kafka_offset")
    lines = [LSST.console_cells(row.asDict()) for row in kept.select(*console_values(LSST, kept.schema)).collect()]
    labels = [column.label for column in LSST.console_columns]
    for alert, line in zip(alerts, lines, strict=True):
        cells = dict(zip(labels, line))
        source = alert["diaSource"]
        assert cells["timestamp"] == Time(source["midpointMjdTai"], format="mjd", precision=0).iso
        assert (cells["topic"], cells["diaSourceId"], cells["band"]) == (TOPIC, str(alert["diaSourceId"]), source["band"])
        assert float(cells["ra"]) == round(source["ra"], 6) and float(cells["dec"]) == round(source["dec"], 6)
        assert cells["main_label"] == ("" if alert["pred"] is None or alert["pred"]["main_label_classifier"] is None
                                       else str(alert["pred"]["main_label_classifier"]))

    ztf, _ = decoded_sample(spark, "ztf-2026", ZTF)
    older = ztf.transform(kept_alerts(ZTF, ())).drop("rf_snia_vs_nonia")  # a table from before the column existed
    line = ZTF.console_cells(older.select(*console_values(ZTF, older.schema)).first().asDict())
    assert line[-1] == "" and line[2].startswith("ZTF")
