"""Messages that are odd but real: writer schemas whose names Java's Avro rejects (fastavro and
Fink's writers accept them), and records that decode but are not alert-shaped. None stops the
job; each odd alert is kept whole, each record that is not an alert is quarantined with a
reason that is true."""

from __future__ import annotations

import copy
import io
import json
import logging
from datetime import datetime, timedelta

import fastavro
from conftest import USER, kafka_messages, read_table, run_job, sample
from pyspark.sql import SparkSession
from reference import OUTPUT_ONLY, assert_same_value, read_alerts
from variants import Variant, expected_alert, nullable

from fink_spark.paths import SCHEMAS_DIR
from fink_spark.run.pipeline import check_filters_at_start
from fink_spark.schema.table import TableSchema
from fink_spark.schema.writer import WriterSchemas, java_legal
from fink_spark.surveys import ZTF
from fink_spark.table.read import read_table as read_spark_table
from fink_spark.testing.publisher import encode
from fink_spark.transform.decode import decode_records, flatten_alerts
from fink_spark.transform.filters import parse_filters

BASE = json.loads((SCHEMAS_DIR / "ztf" / "fink_ztf_transfer_2026-03.avsc").read_text())
# Fink's mangrove cross-match as a record, as a module writes it (the keys of its map: the real
# alerts' values), beside two more names Java rejects; real 2026 alerts otherwise.
HOST = {"type": "record", "name": "mangrove_host", "fields": [
    {"name": name, "type": nullable("string")} for name in ("HyperLEDA_name", "2MASS_name", "lum_dist", "ang_dist")]}
JAVA_NAMES = Variant("java_names", [
    ("add", "mangrove host", nullable(HOST), lambda _, alert: dict(alert["mangrove"])),
    ("add", "flux-ratio", nullable("double"), lambda _, alert: alert["candidate"]["magpsf"] / alert["candidate"]["magap"]),
], columns={"mangrove host": "mangrove_host", "mangrove_host.2MASS_name": "mangrove_host._2MASS_name",
            "flux-ratio": "flux_ratio"})


def test_java_legal_names_decode_the_writers_bytes_unchanged() -> None:
    """Names that start with a digit, hold '-', '.' or a space, or repeat in a record: legal
    stand-ins, the same types in the same order, so the same bytes give the same values."""
    writer = {"type": "record", "name": "9alert", "fields": [
        {"name": "2MASS_name", "type": "string"}, {"name": "flux-err", "type": "double"},
        {"name": "ra dec", "type": {"type": "array", "items": "double"}}, {"name": "n", "type": "int"},
        {"name": "x.y", "type": "int"},
        {"name": "n", "type": "long"}, {"name": "host", "type": {"type": "record", "name": "my.9host", "fields": [
            {"name": "1st", "type": "string"}]}}, {"name": "again", "type": ["null", "my.9host"]}]}
    legal = java_legal(writer)
    assert [item["name"] for item in legal["fields"]] == ["_2MASS_name", "flux_err", "ra_dec", "n", "x_y", "n_2", "host",
                                                          "again"]
    assert legal["name"] == "_9alert" and legal["fields"][6]["type"]["name"] == "my._9host"
    assert legal["fields"][7]["type"] == ["null", "my._9host"]
    assert [item.get("fink_spark_renamed_from") for item in legal["fields"]] == [
        "2MASS_name", "flux-err", "ra dec", None, "x.y", "n", None, None]
    record = {"2MASS_name": "J1", "flux-err": 0.5, "ra dec": [1.0, 2.0], "n": 7, "x.y": 3, "host": {"1st": "x"}, "again": None}
    value = encode(record, fastavro.parse_schema(writer))
    decoded = fastavro.schemaless_reader(io.BytesIO(value), fastavro.parse_schema(legal))
    assert list(decoded.values()) == ["J1", 0.5, [1.0, 2.0], 7, 3, 7, {"_1st": "x"}, None]


def test_a_topic_with_a_writer_schema_java_rejects_keeps_every_alert(
    spark: SparkSession, broker, new_topic, tmp_path,  # noqa: ANN001
) -> None:
    from confluent_kafka import Producer

    from fink_spark.config.job import parse_config

    topic = new_topic("fink_mangrove_ztf")
    alerts = read_alerts(sample("ztf-2026"))
    odd_text = json.dumps(JAVA_NAMES.schema(copy.deepcopy(BASE)))
    base_text = json.dumps(BASE)
    producer = Producer(broker.client_config(USER))
    expected = []
    for index, alert in enumerate(alerts):  # the odd schema and the published one, in turn
        text, record = (odd_text, JAVA_NAMES.record(alert)) if index % 2 else (base_text, alert)
        value = encode(record, fastavro.parse_schema(json.loads(text)))
        producer.produce(topic, value=value, key=text.encode())
        decoded = fastavro.schemaless_reader(io.BytesIO(value), fastavro.parse_schema(json.loads(text)))
        expected.append(expected_alert(decoded, JAVA_NAMES.columns if index % 2 else {}))
    assert producer.flush(30) == 0
    config = parse_config({
        "survey": "ztf",
        "kafka": {"servers": broker.bootstrap, "username": USER, "password": "test-password-4f1c", "topics": [topic]},
        "output": {"table": {"path": str(tmp_path / "warehouse"), "checkpoint": str(tmp_path / "chk")}},
        "trigger": {"available_now": True},
    })
    run_job(spark, config)
    rows = {row["kafka_offset"]: row.asDict(recursive=True)
            for row in read_spark_table(spark, str(tmp_path / "warehouse")).collect()}
    assert sorted(rows) == list(range(len(alerts)))
    assert read_table(tmp_path / "warehouse", table="ztf.quarantine").num_rows == 0
    for offset, alert in enumerate(expected):
        alert = {k: v for k, v in alert.items() if k not in ("year", "month", "day")}
        row = {k: v for k, v in rows[offset].items() if k not in OUTPUT_ONLY}
        assert_same_value(row, alert, f"offset {offset}", every_field=True)
    assert rows[1]["mangrove_host"]["_2MASS_name"] == alerts[1]["mangrove"]["2MASS_name"]
    history = json.loads((tmp_path / "chk" / "fink_spark" / "table_schema.json").read_text())["history"]
    renamed = sorted(name for entry in history for name in entry.get("renamed", []))
    assert renamed == [f"{column} (the writer's {name!r}, a name Java's Avro rejects)" for column, name in [
        ("flux_ratio", "flux-ratio"), ("mangrove_host", "mangrove host"), ("mangrove_host._2MASS_name", "2MASS_name")]]


def test_flat_records_like_fink_mms_are_kept_and_records_without_ids_say_why(spark: SparkSession) -> None:
    """A flat record like fink-mm's (objectId, candid, jd, GCN fields; no candidate struct) is
    kept with the columns it has, its night from `jd`; a record without ids, or without any
    time, is quarantined with what it lacks."""
    flat = {"type": "record", "name": "fink_mm", "fields": [
        {"name": "objectId", "type": ["null", "string"]}, {"name": "candid", "type": ["null", "long"]},
        {"name": "jd", "type": ["null", "double"]}, {"name": "gcn_source", "type": "string"},
        {"name": "p_assoc", "type": "double"}]}
    alert = read_alerts(sample("ztf-2026"))[0]
    good = {"objectId": alert["objectId"], "candid": alert["candid"], "jd": alert["candidate"]["jd"],
            "gcn_source": "Fermi", "p_assoc": 0.4}
    records = [good, {**good, "candid": None}, {**good, "jd": None}]
    writers = WriterSchemas(ZTF)
    text = json.dumps(flat)
    writers.learn(text.encode())
    table = TableSchema.first(json.dumps(BASE), "start")
    table.merge(text, "test")
    decoded = kafka_messages(spark, text, records, "fink_mm_ztf").transform(decode_records(writers, table, ZTF))
    assert [row.reject_reason for row in decoded.orderBy("offset").collect()] == [
        None, "no candid: not an alert-shaped ZTF record", "no candidate.jd nor jd: not an alert-shaped ZTF record"]
    kept = decoded.transform(flatten_alerts(ZTF)).collect()
    assert len(kept) == 1
    row = kept[0].asDict()
    assert {key: row[key] for key in good} == good
    assert row["candidate"] is None  # the alert's columns are there, empty
    expected_time = datetime(1858, 11, 17) + timedelta(days=good["jd"] - 2400000.5)
    assert abs((row["obs_time"] - expected_time).total_seconds()) < 1e-3
    assert (row["year"], row["month"], row["day"]) == (expected_time.year, expected_time.month, expected_time.day)


def test_filters_that_a_writer_schema_cannot_pass_are_named_at_start_up(spark: SparkSession, caplog) -> None:  # noqa: ANN001
    """A filter on a column that one writer schema lacks rejects all that schema's records:
    the job says so when it starts, naming the filter, the columns and the schema."""
    flat = {"type": "record", "name": "fink_mm", "fields": [
        {"name": "objectId", "type": ["null", "string"]}, {"name": "candid", "type": ["null", "long"]},
        {"name": "jd", "type": ["null", "double"]}, {"name": "p_assoc", "type": "double"}]}
    writers = WriterSchemas(ZTF)
    for schema in (BASE, flat):
        writers.learn(json.dumps(schema).encode())
    table = TableSchema.first(json.dumps(BASE), "start")
    table.merge(json.dumps(flat), "test")
    decoded = kafka_messages(spark, json.dumps(flat), [], "fink_mm_ztf").transform(decode_records(writers, table, ZTF))
    filters = parse_filters(["candidate.magpsf < 19 AND candidate.jd > 0", "p_assoc > 0.1", "objectId IS NOT NULL"], ZTF)
    with caplog.at_level(logging.WARNING, logger="fink_spark.run.pipeline"):
        check_filters_at_start(filters, decoded, ZTF, writers)
    described = {json.loads(text)["name"]: name for name, text in writers.described().items()}
    assert [record.getMessage() for record in caplog.records] == [  # writer by writer
        f"filters[1] (p_assoc > 0.1) names p_assoc, which {described[BASE['name']]} lacks: it rejects all of that "
        "schema's records",
        f"filters[0] (candidate.magpsf < 19 AND candidate.jd > 0) names candidate.magpsf, candidate.jd, which "
        f"{described['fink_mm']} lacks: it rejects all of that schema's records",
    ]
