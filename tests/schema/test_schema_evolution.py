"""One table across writer schemas: a topic mixing versions (fields removed, added at the top
and nested, widened, retyped; real older schemas), and the same alerts reprocessed from
Avro files. Every alert is compared field by field with fastavro decoding it with its own
writer schema; nothing valid is quarantined."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
from dataclasses import replace
from datetime import timezone
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq
import pytest
import yaml
from confluent_kafka import Producer
from conftest import PASSWORD, USER, avro_datum, job_config, parquet_output, run_job, sample
from reference import OUTPUT_ONLY, assert_same_value, read_alerts
from variants import LSST_VARIANTS, ZTF_VARIANTS, Variant, expected_alert

from fink_spark.config.job import parse_config
from fink_spark.errors import ConfigError
from fink_spark.paths import PROJECT_ROOT, SCHEMAS_DIR
from fink_spark.run.inputs import KafkaRange
from fink_spark.run.reprocess import reprocess
from fink_spark.table.read import read_table
from fink_spark.table.warehouse import load_pyiceberg
from fink_spark.testing.local_broker import LocalKafka

SCHEMA_27 = (SCHEMAS_DIR / "ztf" / "distribution_schema_fink_ztf_2.7_3.10.1.avsc").read_text()


class Message:
    """One message as Fink publishes it, and the alert the table must hold for it."""

    def __init__(self, key: bytes, writer: str, record: dict, columns: dict[str, str]) -> None:
        parsed = fastavro.parse_schema(json.loads(writer))
        self.key, self.writer = key, writer
        self.value = avro_datum(writer, record)
        decoded = fastavro.schemaless_reader(io.BytesIO(self.value), parsed)
        self.expected = expected_alert(decoded, columns)
        # Fink's year/month/day are the table's night columns; its `topic` field is alert_topic.
        self.expected = {f"alert_{k}" if k == "topic" else k: v for k, v in self.expected.items()
                         if k not in ("year", "month", "day")}


def messages_of(survey: str, variants: list[Variant]) -> list[Message]:
    """The survey's 2026 alerts, each written with one of the variants in turn, then real
    alerts of older schemas with their own keys."""
    base_text = (SCHEMAS_DIR / survey / f"fink_{survey}_transfer_2026-03.avsc").read_text()
    base = json.loads(base_text)
    messages = []
    for index, alert in enumerate(read_alerts(sample(f"{survey}-2026"))):
        variant = variants[index % len(variants)]
        writer = json.dumps(variant.schema(base))
        messages.append(Message(writer.encode(), writer, variant.record(alert), variant.columns))
    if survey == "ztf":
        with (sample("ztf-0p2") / "fink-broker-sample-alert-1.avro").open("rb") as handle:
            old_text = fastavro.reader(handle).metadata["avro.schema"]
        messages += [Message(old_text.encode(), old_text, alert, {}) for alert in read_alerts(sample("ztf-0p2"))]
        messages += [Message(b"2.7_3.10.1", SCHEMA_27, alert, {}) for alert in read_alerts(sample("ztf-2026"))[:3]]
    else:
        with next(sample("lsst-rubin-9.0").glob("*.avro")).open("rb") as handle:
            old_text = fastavro.reader(handle).metadata["avro.schema"]
        messages += [Message(old_text.encode(), old_text, alert, {}) for alert in read_alerts(sample("lsst-rubin-9.0"))]
    return messages


def publish_mixed(broker: LocalKafka, topic: str, messages: list[Message]) -> None:
    """Round robin over 2 partitions, so that each partition meets the schemas in turn."""
    producer = Producer(broker.client_config(USER))
    for index, message in enumerate(messages):
        producer.produce(topic, value=message.value, key=message.key, partition=index % 2)
    assert producer.flush(30) == 0


def assert_table_holds(rows: dict[Any, dict], messages: dict[Any, Message]) -> None:
    """Every message's alert is a row holding every field as fastavro decodes it, each
    retyped field in the column the rule names, every other column null."""
    assert sorted(rows) == sorted(messages)
    for where, message in messages.items():
        alert = {k: v for k, v in rows[where].items() if k not in OUTPUT_ONLY}
        assert_same_value(alert, message.expected, f"message at {where}", every_field=True)


def by_position(spark, path: Path) -> dict[tuple[int, int], dict]:  # noqa: ANN001
    rows = read_table(spark, str(path)).collect()
    return {(row["kafka_partition"], row["kafka_offset"]): row.asDict(recursive=True) for row in rows}


def positions(messages: list[Message]) -> dict[tuple[int, int], Message]:
    """Where publish_mixed puts each message: (partition, offset)."""
    return {(index % 2, index // 2): message for index, message in enumerate(messages)}


@pytest.mark.subprocess
def test_ztf_topic_mixing_seven_writer_schemas_keeps_every_value(spark, broker, new_topic, tmp_path: Path) -> None:  # noqa: ANN001
    topic = new_topic("fink_versions_ztf", partitions=2)
    messages = messages_of("ztf", ZTF_VARIANTS)
    assert len({message.key for message in messages}) == 7
    publish_mixed(broker, topic, messages)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({
        "survey": "ztf", "schema": str(SCHEMAS_DIR / "ztf" / "fink_ztf_transfer_2026-03.avsc"),
        "kafka": {"servers": broker.bootstrap, "username": USER, "password_env": "FINK_TEST_PASSWORD",
                  "topics": [topic], "starting_offsets": "earliest"},
        "output": {"table": {"path": str(tmp_path / "warehouse"), "checkpoint": str(tmp_path / "chk")}, "console": {"rows": 2}},
    }))
    result = subprocess.run(
        [str(PROJECT_ROOT / "spark-submit.sh"), "--master", "local[2]", "jobs/stream.py", "--config", str(config),
         "--available-now"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "FINK_TEST_PASSWORD": PASSWORD},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    assert_table_holds(by_position(spark, tmp_path / "warehouse"), positions(messages))
    assert read_table(spark, str(tmp_path / "warehouse"), "quarantine").count() == 0  # nothing valid quarantined
    # One INFO line per schema met, naming where (or 'before the start') and what changed; no stack trace.
    met = [line for line in output.splitlines() if "New writer schema at" in line]
    assert met and all(f"{topic}[" in line and "offset" in line for line in met), output
    changes = met + [line for line in output.splitlines() if "writer schema met before the start" in line]
    assert any("retyped into new columns candidate.isdiffpos__boolean, prv_candidates[].isdiffpos__boolean" in line
               for line in changes)
    assert any("widened candidate.fid int->long, candidate.magpsf float->double" in line for line in changes)
    noisy = [line for line in output.splitlines() if "\tat " in line or "Exception" in line]
    assert not noisy, "\n".join(noisy[:20])
    # The schema and its history beside the checkpoint; each change met mid-stream is a snapshot
    # of the Iceberg table whose summary says what changed (no side file in the warehouse).
    saved = json.loads((tmp_path / "chk" / "fink_spark" / "table_schema.json").read_text())
    assert not list((tmp_path / "warehouse").rglob("table_schema.json"))
    summaries = [snapshot.summary.additional_properties for snapshot in load_pyiceberg(tmp_path / "warehouse").snapshots()]
    recorded = [entry for summary in summaries if "fink-spark.schema-change" in summary
                for entry in json.loads(summary["fink-spark.schema-change"])]
    met_mid_stream = [entry for entry in saved["history"] if "offset" in entry["at"]]
    assert met_mid_stream and recorded == met_mid_stream
    changed = [name for entry in saved["history"] for key in ("added", "widened", "siblings") for name in entry.get(key, [])]
    assert sorted(changed) == sorted([
        "candidate.snr", "prv_candidates[].band", "fink_spark_candid_text", "topic",
        "candidate.fid int->long", "candidate.magpsf float->double", "prv_candidates[].magpsf float->double",
        "Plx float->double", "roid int->long",
        "candidate.isdiffpos__boolean", "prv_candidates[].isdiffpos__boolean", "mangrove__string",
        "is_transient__double", "timestamp__timestamp_micros",
    ])


def test_lsst_topic_mixing_six_writer_schemas_keeps_every_value(spark, broker, new_topic, tmp_path: Path) -> None:  # noqa: ANN001
    topic = new_topic("fink_versions_lsst", partitions=2)
    messages = messages_of("lsst", LSST_VARIANTS)
    assert len({message.key for message in messages}) == 6
    publish_mixed(broker, topic, messages)
    config = job_config(broker, tmp_path, [topic], survey="lsst",
                        schema=str(SCHEMAS_DIR / "lsst" / "fink_lsst_transfer_2026-03.avsc"))
    run_job(spark, config)
    assert_table_holds(by_position(spark, tmp_path / "alerts"), positions(messages))
    assert list((tmp_path / "alerts_quarantine").rglob("*.parquet")) == []

    # The same offsets reprocessed as a Kafka range: it meets the schemas it did not know at its start.
    span = KafkaRange.parse(f"{topic}:0=0-{(len(messages) + 1) // 2},1=0-{len(messages) // 2}")
    ranged = replace(config, output=replace(config.output, path=str(tmp_path / "range"),
                                            checkpoint=str(tmp_path / "range_chk")))
    assert reprocess(spark, ranged, [], [span], "unused") == len(messages)
    assert_table_holds(by_position(spark, tmp_path / "range"), positions(messages))


@pytest.mark.parametrize(("survey", "variants", "id_column"), [
    ("ztf", ZTF_VARIANTS, "candid"), ("lsst", LSST_VARIANTS, "diaSourceId"),
])
def test_the_same_alerts_saved_as_files_reprocess_into_one_table(spark, tmp_path: Path, survey: str, variants, id_column: str) -> None:  # noqa: ANN001, E501
    """Avro files of every writer schema (one alert each, several alerts each, gzipped), and
    two files that cannot be read: those go to the quarantine with their path, the rest is written."""
    messages = [message for message in messages_of(survey, variants) if message.key != b"2.7_3.10.1"]
    folder = tmp_path / "saved"
    folder.mkdir()
    by_writer: dict[str, list[Message]] = {}
    for message in messages:
        by_writer.setdefault(message.writer, []).append(message)
    for number, (writer, group) in enumerate(by_writer.items()):
        parsed = fastavro.parse_schema(json.loads(writer))
        records = [fastavro.schemaless_reader(io.BytesIO(message.value), parsed) for message in group]
        for part in range(0, len(records), 3 if number % 2 else 1):  # one alert a file, or three
            buffer = io.BytesIO()
            fastavro.writer(buffer, parsed, records[part : part + 3 if number % 2 else part + 1], codec="deflate")
            name = folder / f"writer{number}-{part}.avro"
            if number == 2:
                name.with_suffix(".avro.gz").write_bytes(gzip.compress(buffer.getvalue()))
            else:
                name.write_bytes(buffer.getvalue())
    (folder / "not-avro.avro").write_bytes(b"this is not an Avro file")
    whole = next(folder.glob("writer1-*.avro")).read_bytes()
    (folder / "truncated.avro").write_bytes(whole[: len(whole) // 2])

    config = parse_config({"survey": survey, "schema": str(SCHEMAS_DIR / survey / f"fink_{survey}_transfer_2026-03.avsc"),
                           "output": parquet_output(tmp_path)},
                          kafka_required=False)
    inputs = [str(folder / "*.avro"), str(folder / "*.avro.gz")]
    assert reprocess(spark, config, inputs, [], "saved") == len(messages)

    rows = {row[id_column]: row.asDict(recursive=True) for row in read_table(spark, str(tmp_path / "out")).collect()}
    assert_table_holds(rows, {message.expected[id_column]: message for message in messages})
    quarantine = read_table(spark, str(tmp_path / "out_quarantine")).collect()
    assert sorted(row.reject_reason.split(" as an Avro file")[0] for row in quarantine) == [
        f"cannot read {folder / 'not-avro.avro'}", f"cannot read {folder / 'truncated.avro'}",
    ]
    assert sorted(bytes(row.value) for row in quarantine) == sorted([b"this is not an Avro file", whole[: len(whole) // 2]])


def test_finks_parquet_of_2021_and_avro_of_2026_reprocess_into_one_table(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """Fink's own science Parquet of 2021 (timestamp a timestamp, mulens a record, rfscore and
    knscore) beside the 2026 Avro alerts (timestamp a string, mulens a double): one table,
    every value of both kept, the 2021 ones of other types in their sibling columns."""
    parquet = sample("ztf-parquet-2021")
    config = parse_config({"survey": "ztf", "schema": str(SCHEMAS_DIR / "ztf" / "fink_ztf_transfer_2026-03.avsc"),
                           "output": parquet_output(tmp_path)},
                          kafka_required=False)
    old = pq.read_table(next(parquet.glob("*.parquet"))).to_pylist()
    new = read_alerts(sample("ztf-2026"))
    assert reprocess(spark, config, [str(parquet), str(sample("ztf-2026"))], [], "saved") == len(old) + len(new) == 47

    rows = {row.candid: row.asDict(recursive=True) for row in read_table(spark, str(tmp_path / "out")).collect()}
    assert len(rows) == 47
    moved = {"mulens": "mulens__record", "timestamp": "timestamp__timestamp_micros"}
    for alert in old:
        alert["timestamp"] = alert["timestamp"].to_pydatetime().replace(tzinfo=timezone.utc)
        expected = {moved.get(name, name): value for name, value in alert.items() if name != "day"}
        table_row = {name: value for name, value in rows[alert["candid"]].items() if name not in OUTPUT_ONLY}
        assert_same_value(table_row, expected, f"2021 alert {alert['candid']}", every_field=True)
    for alert in new:
        table_row = {name: value for name, value in rows[alert["candid"]].items() if name not in OUTPUT_ONLY}
        expected = {name: value for name, value in alert.items() if name not in ("year", "month", "day")}
        assert_same_value(table_row, expected, f"2026 alert {alert['candid']}", every_field=True)


NEW_IDS = 10**15  # added to a replicated alert's candid: ids no real alert of the sample has


def test_a_parquet_folder_whose_files_differ_reads_as_one_table(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """A folder of Fink Parquet where a later file widened int columns and lost one: Spark
    alone fails to merge it ("CANNOT_MERGE_SCHEMAS"); read_table and reprocessing read it."""
    original = pq.read_table(next(sample("ztf-parquet-2021").glob("*.parquet")))
    folder = tmp_path / "fink-parquet"
    folder.mkdir()
    microseconds = {"coerce_timestamps": "us"}  # as Spark writes them (it cannot read nanoseconds)
    pq.write_table(original, folder / "part-0.parquet", **microseconds)
    later = original.drop_columns(["knscore"])
    later = later.set_column(later.schema.get_field_index("candid"), "candid", pa.compute.add(later["candid"], NEW_IDS))
    retyped = {"roid": pa.int64(), "nalerthist": pa.int64(), "timestamp": pa.timestamp("us", tz="UTC")}  # UTC: as Spark's
    for name, new_type in retyped.items():
        later = later.set_column(later.schema.get_field_index(name), name, later[name].cast(new_type))
    pq.write_table(later.replace_schema_metadata(None), folder / "part-1.parquet", **microseconds)  # not part-0's Spark schema

    table = read_table(spark, str(folder))
    assert table.schema["roid"].dataType.simpleString() == "bigint" and "knscore" in table.columns
    rows = {row.candid: row for row in table.collect()}
    assert len(rows) == 32
    for alert in original.to_pylist():
        assert (rows[alert["candid"]].roid, rows[alert["candid"]].knscore) == (alert["roid"], alert["knscore"])
        assert (rows[alert["candid"] + NEW_IDS].roid, rows[alert["candid"] + NEW_IDS].knscore) == (alert["roid"], None)

    output = parquet_output(tmp_path)
    config = parse_config({"survey": "ztf", "output": output}, kafka_required=False)
    assert reprocess(spark, config, [str(folder)], [], "saved") == 32

    # A type Spark cannot widen (int vs string) is a clear error, naming the file.
    clash = tmp_path / "clash"
    clash.mkdir()
    pq.write_table(original, clash / "part-0.parquet", **microseconds)
    as_text = later.set_column(later.schema.get_field_index("roid"), "roid", later["roid"].cast(pa.string()))
    pq.write_table(as_text.replace_schema_metadata(None), clash / "part-1.parquet", **microseconds)
    with pytest.raises(ConfigError, match=r"part-1.parquet holds a column of type string where other files have int"):
        read_table(spark, str(clash))
