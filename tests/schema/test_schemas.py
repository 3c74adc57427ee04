"""Every Fink stream decodes: writer schemas from the keys, several versions in one topic,
version-string keys, Data Transfer topics, and the discovery command."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Producer
from conftest import PASSWORD, USER, avro_datum, job_config, kafka_messages, kafka_records, run_job, sample
from reference import OUTPUT_ONLY, assert_same_value, read_alerts

from fink_spark.paths import PROJECT_ROOT, SCHEMAS_DIR
from fink_spark.schema.table import TableSchema
from fink_spark.schema.writer import WriterSchemas, schema_fingerprint
from fink_spark.surveys import ZTF
from fink_spark.table.read import read_table
from fink_spark.testing.local_broker import LocalKafka
from fink_spark.testing.publisher import encode, publish, read_saved_alerts
from fink_spark.transform.decode import decode_records, flatten_alerts
from fink_spark.transform.filters import apply_filters, parse_filters

SCHEMA_2026 = (SCHEMAS_DIR / "ztf" / "fink_ztf_transfer_2026-03.avsc").read_text()
SCHEMA_27 = (SCHEMAS_DIR / "ztf" / "distribution_schema_fink_ztf_2.7_3.10.1.avsc").read_text()




def reordered_with_extra_field(schema_text: str) -> str:
    """The 2026 schema with its fields in reverse order and one more field."""
    schema = json.loads(schema_text)
    fields = list(reversed(schema["fields"])) + [{"name": "fink_spark_extra", "type": ["string", "null"]}]
    return json.dumps({**schema, "fields": fields})


def produce(broker: LocalKafka, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer(broker.client_config(USER))
    for key, value in messages:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0


def test_one_topic_with_three_writer_schemas_lands_in_one_table(spark, broker, new_topic, tmp_path: Path) -> None:
    topic = new_topic("fink_upgrade_ztf")
    alerts = read_alerts(sample("ztf-2026"))[:6]
    reordered = reordered_with_extra_field(SCHEMA_2026)
    writers = [  # (key, writer schema): JSON keys and an old-style version-string key
        (SCHEMA_2026.encode(), SCHEMA_2026),
        (b"2.7_3.10.1", SCHEMA_27),
        (reordered.encode(), reordered),
    ]
    messages, references = [], []
    for index, alert in enumerate(alerts):
        key, writer = writers[index % 3]
        parsed = fastavro.parse_schema(json.loads(writer))
        value = encode(alert, parsed)
        messages.append((key, value))
        references.append(fastavro.schemaless_reader(io.BytesIO(value), parsed))
    produce(broker, topic, messages)

    run_job(spark, job_config(broker, tmp_path, [topic], schema=str(SCHEMAS_DIR / "ztf" / "fink_ztf_transfer_2026-03.avsc")))

    rows = {row["kafka_offset"]: row.asDict(recursive=True) for row in read_table(spark, str(tmp_path / "alerts")).collect()}
    assert sorted(rows) == list(range(6))
    for offset, reference in enumerate(references):
        alert_fields = {k: v for k, v in rows[offset].items() if k not in OUTPUT_ONLY}
        assert_same_value(alert_fields, reference, f"offset {offset}")
    # Alerts written with the 2.7 schema lack the 2026 fields: null, not an error.
    assert rows[1]["finkclass"] is None and rows[4]["finkclass"] is None
    assert rows[0]["finkclass"] == alerts[0]["finkclass"] and rows[2]["finkclass"] == alerts[2]["finkclass"]
    # The reordered schema's new field is a new column, null for the alerts written without it.
    assert [rows[offset]["fink_spark_extra"] for offset in range(6)] == [None] * 6
    saved = json.loads((tmp_path / "checkpoints" / "fink_spark" / "fink_spark_writer_schemas.json").read_text())
    assert {bytes.fromhex(key) for key, _ in saved["known"]} >= {SCHEMA_2026.encode(), reordered.encode()}


def test_data_transfer_topic_takes_its_schema_from_the_side_topic(spark, broker, new_topic, tmp_path: Path) -> None:
    topic = new_topic("ftransfer_ztf_2026-03-22_12345")
    broker.create_topics([f"{topic}_schema"])
    produce(broker, f"{topic}_schema", [(SCHEMA_2026.encode(), b"")])
    parsed = fastavro.parse_schema(json.loads(SCHEMA_2026))
    alerts = read_alerts(sample("ztf-2026"))[:5]
    produce(broker, topic, [(None, encode(alert, parsed)) for alert in alerts])
    run_job(spark, job_config(broker, tmp_path, [topic]))
    rows = spark.read.parquet(str(tmp_path / "alerts")).select("candid", "objectId").collect()
    assert sorted((r.candid, r.objectId) for r in rows) == sorted((a["candid"], a["objectId"]) for a in alerts)


@pytest.mark.subprocess
def test_discover_saves_the_topic_schema(broker, new_topic, tmp_path: Path) -> None:
    topic = new_topic("fink_discover_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF)
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps({
        "survey": "ztf",
        "kafka": {"servers": broker.bootstrap, "username": USER, "password_env": "TEST_FINK_PW", "topics": [topic]},
        "output": {"format": "parquet", "table": {"path": str(tmp_path / "a"), "checkpoint": str(tmp_path / "c")}},
    }))
    output = tmp_path / "discovered.avsc"
    result = subprocess.run(
        [sys.executable, "-m", "fink_spark.cli.discover", "--config", str(config), "--topic", topic, "--output", str(output)],
        capture_output=True, text=True, cwd=PROJECT_ROOT, env={"TEST_FINK_PW": PASSWORD, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    with (sample("ztf-0p2") / "fink-broker-sample-alert-1.avro").open("rb") as handle:
        expected = fastavro.reader(handle).metadata["avro.schema"]
    assert json.loads(output.read_text()) == json.loads(expected)
    assert result.stdout.splitlines()[1:] == [
        f"fields:      {len(json.loads(expected)['fields'])}",
        "fink fields: cdsxmatch",
        f"fingerprint: {schema_fingerprint(expected)} (Avro CRC-64 of the canonical form)",
    ]


def test_bundled_version_keys_and_a_lenient_table_schema() -> None:
    writers = WriterSchemas(ZTF)
    assert set(writers.bundled_versions()) == {b"2.7_3.10.1"}
    assert writers.learn(b"2.7_3.10.1") and writers.known[b"2.7_3.10.1"] == SCHEMA_27
    reader = TableSchema.first(SCHEMA_2026, "start").schema
    assert all(field["type"][0] == "null" and field["default"] is None for field in reader["fields"])
    assert not writers.learn(b"2.7_3.10.1") and writers.learn(b"8.8_1.0.0")
    assert "does not bundle" in writers.rejected[b"8.8_1.0.0"]


def test_each_record_is_decoded_once_whatever_reads_the_alert(spark) -> None:
    """The reject reason, the alert columns and a filter all read the decoded struct; the
    plan must still run one decoder per writer schema, not one per reference (without the
    guard, Spark 4.2 runs 2 per schema here, Spark 4.1 runs 12)."""
    writers = WriterSchemas(ZTF)
    writers.learn(b"2.7_3.10.1")
    writers.learn(SCHEMA_2026.encode())
    saved = next(read_saved_alerts([sample("ztf-2026")]))
    assert saved.schema_text == SCHEMA_2026
    records = kafka_records(spark, "ztf-2026", "t")
    table = TableSchema.first(SCHEMA_2026, "start")
    kept = records.transform(decode_records(writers, table, ZTF)).transform(flatten_alerts(ZTF))
    kept = kept.transform(apply_filters(parse_filters(["candidate.magpsf < 19"], ZTF)))
    plan = kept._jdf.queryExecution().optimizedPlan().toString()  # noqa: SLF001 - the plan Spark will run
    assert plan.count("from_avro(") == len(writers.known) == 2
    assert kept.count() == sum(record["candidate"]["magpsf"] < 19 for record in saved.records) > 0


# Every bundled writer schema, and the real alerts the tests write with it.
BUNDLED = {
    "ztf/fink_ztf_transfer_2026-03.avsc": "ztf-2026",
    "ztf/distribution_schema_fink_ztf_2.7_3.10.1.avsc": "ztf-2026",
    "ztf/distribution_schema_0p2.avsc": "ztf-0p2",
    "ztf/ztf_alert_3.3.avsc": "ztf-raw-3.3",
    "lsst/fink_lsst_transfer_2026-03.avsc": "lsst-2026",
    "lsst/rubin_lsst.v9_0_fink_ingest.avsc": "lsst-rubin-9.0",
}


def test_every_bundled_schema_file_is_listed_here_and_in_the_docs() -> None:
    files = {path.relative_to(SCHEMAS_DIR).as_posix() for path in SCHEMAS_DIR.glob("*/*.avsc")}
    assert files == set(BUNDLED)
    documented = (PROJECT_ROOT / "docs" / "schemas.md").read_text()
    assert [name for name in BUNDLED if f"`{name}`" not in documented] == []
    for survey in ("ztf", "lsst"):
        assert f"{survey}/{(SCHEMAS_DIR / survey / 'latest').read_text().strip()}" in BUNDLED


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_each_bundled_schema_parses_and_decodes_its_real_alerts(spark, name: str) -> None:  # noqa: ANN001
    """Parsed by fastavro and by Java's Avro (Spark's), and the sample's alerts written with it
    come out of the job's decoding with their ids, every one kept."""
    from fink_spark.surveys import SURVEYS

    survey = SURVEYS[name.split("/")[0]]
    text = (SCHEMAS_DIR / name).read_text()
    parsed = fastavro.parse_schema(json.loads(text))
    spark._jvm.org.apache.avro.Schema.Parser().parse(text)  # noqa: SLF001 - raises if Java's Avro refuses it
    values = [avro_datum(text, record) for record in read_alerts(sample(BUNDLED[name]))]
    written = [fastavro.schemaless_reader(io.BytesIO(value), parsed) for value in values]  # what the schema keeps
    writers = WriterSchemas(survey)
    writers.learn(text.encode())
    records = kafka_messages(spark, text, written, f"fink_{survey.name}")
    decoded = records.transform(decode_records(writers, TableSchema.first(text, "test"), survey))
    kept = decoded.transform(flatten_alerts(survey)).select(survey.id_column).collect()
    assert sorted(row[0] for row in kept) == sorted(record[survey.id_column] for record in written)
    assert decoded.where("reject_reason IS NOT NULL").count() == 0
