"""The core job end to end: real alerts published to a real broker, the job run with
'available now', the Parquet read back through Spark and compared with fastavro."""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from collections import Counter
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path

import fastavro
import pytest
from conftest import USER, job_config, run_job, sample
from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from reference import check_alerts, read_alerts, ztf_mjd

from fink_spark.errors import KafkaAccessError
from fink_spark.kafka.client import newest, records_at
from fink_spark.paths import SCHEMAS_DIR
from fink_spark.run.progress import BatchProgress
from fink_spark.run.stream import prepare_stream
from fink_spark.surveys import LSST, ZTF
from fink_spark.testing.local_broker import LocalKafka
from fink_spark.testing.publisher import encode, publish, read_saved_alerts, replicate

ZTF_2026_SCHEMA = str(SCHEMAS_DIR / "ztf" / "fink_ztf_transfer_2026-03.avsc")


def read_output(spark: SparkSession, path: Path) -> list[dict]:
    """The job's Parquet as a user reads it: through Spark, honouring _spark_metadata."""
    return [row.asDict(recursive=True) for row in spark.read.parquet(str(path)).collect()]


def test_ztf_topics_land_in_parquet_exactly_as_published(spark, broker: LocalKafka, new_topic, tmp_path: Path) -> None:
    sn, early, old = new_topic("fink_sn_candidates_ztf"), new_topic("fink_early_sn_candidates_ztf"), new_topic("fink_0p2")
    config_user = broker.client_config(USER)
    published = {
        sn: publish(config_user, sn, [sample("ztf-2026")], ZTF),
        early: publish(config_user, early, [sample("ztf-2026")], ZTF),
        old: publish(config_user, old, [sample("ztf-0p2")], ZTF),
    }
    config = job_config(broker, tmp_path, [sn, early, old], schema=ZTF_2026_SCHEMA)
    run_job(spark, config)

    rows = read_output(spark, tmp_path / "alerts")
    assert Counter(row["topic"] for row in rows) == published
    # The same alert in two topics is two rows, one per topic.
    check_alerts(rows, read_alerts(sample("ztf-2026")), "candid", sn, ztf_mjd)
    check_alerts(rows, read_alerts(sample("ztf-2026")), "candid", early, ztf_mjd)
    # 0p2 alerts resolve onto the 2026 schema: fields it lacked are null, 'topic' is kept apart.
    check_alerts(rows, read_alerts(sample("ztf-0p2")), "candid", old, ztf_mjd)
    assert all(row["kafka_offset"] >= 0 and row["kafka_timestamp"] is not None for row in rows)
    old_rows = [row for row in rows if row["topic"] == old]
    assert all(row["rf_snia_vs_nonia"] is None and row["finkclass"] is None for row in old_rows)
    # Partitioned by topic and night on disk.
    nights = {(row["topic"], row["year"], row["month"], row["day"]) for row in rows}
    for topic, year, month, day in nights:
        folder = tmp_path / "alerts" / f"topic={topic}" / f"year={year}" / f"month={month}" / f"day={day}"
        assert list(folder.glob("*.parquet")), folder
    assert not list((tmp_path / "alerts_quarantine").rglob("*.parquet"))


def test_lsst_alerts_land_in_parquet(spark, broker: LocalKafka, new_topic, tmp_path: Path) -> None:
    topic = new_topic("fink_sn_candidates_lsst")
    count = publish(broker.client_config(USER), topic, [sample("lsst-2026")], LSST)
    output = run_job(spark, job_config(broker, tmp_path, [topic], survey="lsst"))
    rows = read_output(spark, tmp_path / "alerts")
    assert len(rows) == count == 7
    check_alerts(rows, read_alerts(sample("lsst-2026")), "diaSourceId", topic, lambda a: a["diaSource"]["midpointMjdTai"])
    assert "diaSourceId" in output and "7 alerts" in output


def test_a_watchlist_keeps_the_live_alerts_near_its_targets(spark, broker: LocalKafka, new_topic, tmp_path: Path) -> None:
    """The watchlist on the stream: the alerts within 2" of a target, each with its nearest
    target's id and separation, as brute force over every alert and target finds them."""
    import numpy as np

    from fink_spark.view.sky import Cone

    topic = new_topic("fink_watch_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-2026")], ZTF)
    alerts = read_alerts(sample("ztf-2026"))
    targets = [(f"target-{i}", alert["candidate"]["ra"] + 1.2 / 3600 / np.cos(np.radians(alert["candidate"]["dec"])),
                alert["candidate"]["dec"]) for i, alert in enumerate(alerts[::7])] + [("far", 10.0, -89.0)]
    catalog = tmp_path / "targets.csv"
    catalog.write_text("id,ra,dec\n" + "".join(f"{name},{float(ra)!r},{float(dec)!r}\n" for name, ra, dec in targets))
    ra, dec = (np.array([alert["candidate"][c] for alert in alerts]) for c in ("ra", "dec"))
    want = {}
    for name, target_ra, target_dec in targets:
        for alert, separation in zip(alerts, Cone(target_ra, target_dec, 2).separations(ra, dec)):
            if separation <= 2 and separation < want.get(alert["candid"], (None, 3))[1]:
                want[alert["candid"]] = (name, separation)
    assert len(want) >= len(targets) - 1
    run_job(spark, job_config(broker, tmp_path, [topic],
                              filters=[{"preset": "watchlist", "catalog": str(catalog), "radius": 2, "id_column": "id"}]))
    rows = read_output(spark, tmp_path / "alerts")
    assert {row["candid"]: row["watchlist_id"] for row in rows} == {candid: name for candid, (name, _) in want.items()}
    for row in rows:
        assert row["watchlist_separation_arcsec"] == pytest.approx(want[row["candid"]][1], abs=1e-6)
        assert [match["id"] for match in row["watchlist_matches"]][0] == row["watchlist_id"]


def test_restart_adds_only_new_alerts(spark, broker: LocalKafka, new_topic, tmp_path: Path) -> None:
    topic = new_topic("fink_restart_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF)
    config = job_config(broker, tmp_path, [topic])
    run_job(spark, config)
    first = read_output(spark, tmp_path / "alerts")
    assert len(first) == 4
    publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=3)  # 4 old ids again, 8 new
    run_job(spark, config)
    rows = read_output(spark, tmp_path / "alerts")
    offsets = Counter(row["kafka_offset"] for row in rows)
    assert sorted(offsets) == list(range(16)) and set(offsets.values()) == {1}
    assert len({row["candid"] for row in rows}) == 12


def test_console_shows_one_aligned_line_per_alert(spark, broker: LocalKafka, new_topic, tmp_path: Path) -> None:
    topic = new_topic("fink_console_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF)
    output = run_job(spark, job_config(broker, tmp_path, [topic], schema=ZTF_2026_SCHEMA))
    alerts = read_alerts(sample("ztf-0p2"))
    width = len(topic)
    expected = ["--- batch 0: 4 alerts, 0 quarantined ---",
                "timestamp           | " + "topic".ljust(width) + " | objectId     | cdsxmatch | rf_snia_vs_nonia"]
    for alert in alerts:  # one file per alert, published in file order
        seconds = round((alert["candidate"]["jd"] - 2440587.5) * 86400)  # to the nearest second
        when = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        expected.append(f"{when} | {topic} | {alert['objectId']} | {alert['cdsxmatch'].ljust(9)} |")
    assert output.splitlines() == expected


def test_poison_messages_go_to_quarantine(spark, broker: LocalKafka, new_topic, tmp_path: Path) -> None:
    from confluent_kafka import Producer

    topic = new_topic("fink_poison_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF)
    schema_key = (SCHEMAS_DIR / "ztf" / "distribution_schema_0p2.avsc").read_bytes()
    producer = Producer(broker.client_config(USER))
    poison = [(schema_key, b"\x07garbage"), (schema_key, b""), (b"9.9_9.9.9", b"\x00"), (b"not a schema", b"\x00"), (None, b"\x00")]
    stamps = [1_780_000_000_123 + index for index in range(len(poison))]  # milliseconds, as Kafka keeps them
    for (key, value), stamp in zip(poison, stamps):
        producer.produce(topic, value=value, key=key, timestamp=stamp)
    producer.flush(10)
    config = job_config(broker, tmp_path, [topic])
    output = run_job(spark, config)
    assert len(read_output(spark, tmp_path / "alerts")) == 4
    quarantine = {row["kafka_offset"]: row for row in read_output(spark, tmp_path / "alerts_quarantine")}
    assert {offset: row["reject_reason"] for offset, row in quarantine.items()} == {
        4: "value does not decode with the writer schema its key names",
        5: "empty value",
        6: "key names schema version 9.9_9.9.9, which fink-spark does not bundle",
        7: "key is neither a JSON Avro schema nor a schema version string",
        8: "no key: the writer schema is unknown",
    }
    assert bytes(quarantine[4]["value"]) == b"\x07garbage" and bytes(quarantine[6]["key"]) == b"9.9_9.9.9"
    assert [round(quarantine[offset]["kafka_timestamp"].timestamp() * 1000) for offset in range(4, 9)] == stamps
    assert len(list((tmp_path / "alerts_quarantine").rglob("*.parquet"))) == 1  # one batch, one file
    assert "4 alerts, 5 quarantined" in output
    # the driver fetches a batch's few quarantined records again, unless they weigh too much
    positions = [(topic, 0, 4), (topic, 0, 6)]
    assert records_at(config.kafka, positions, len(schema_key) + 100).column("value").to_pylist() == [b"\x07garbage", b"\x00"]
    assert records_at(config.kafka, positions, len(schema_key)) is None


def test_the_driver_reads_the_messages_at_given_positions_and_only_those(broker: LocalKafka, new_topic, tmp_path: Path) -> None:
    """What the job peeks at before it starts (the first and newest message of each partition:
    the batches' first size estimate) and the quarantined records it fetches again are the
    messages at those positions, not the ones that follow them in a fetch."""
    from confluent_kafka import Producer

    topic = new_topic("fink_positions_ztf", partitions=2)
    producer = Producer(broker.client_config(USER))
    for partition in (0, 1):
        for offset in range(3):
            producer.produce(topic, value=b"v" * (100 * (partition + 1) + 10 * offset), key=b"k", partition=partition)
    producer.flush(10)
    kafka = job_config(broker, tmp_path, [topic]).kafka
    peeked = newest(kafka, {topic: 2}, starts={topic: {0: 0, 1: 0}})
    assert [(m.partition, m.size) for m in peeked] == [(0, 121), (1, 221), (0, 101), (1, 201)]  # newest, then first
    fetched = records_at(kafka, [(topic, 1, 2), (topic, 0, 0), (topic, 0, 1)], 10_000)
    assert [(row["partition"], row["offset"], len(row["value"])) for row in fetched.to_pylist()] == [
        (0, 0, 100), (0, 1, 110), (1, 2, 220)]
    # no message at offset 3 (yet): that position is left out
    assert records_at(kafka, [(topic, 0, 0), (topic, 0, 3)], 10_000, timeout=2).column("offset").to_pylist() == [0]


def test_wrong_password_fails_fast_naming_user_and_servers(broker: LocalKafka, new_topic, tmp_path: Path) -> None:
    config = job_config(broker, tmp_path, [new_topic("fink_auth_ztf")], kafka__password="not-the-password")
    started = time.monotonic()
    with pytest.raises(KafkaAccessError) as error:
        prepare_stream(config)
    assert time.monotonic() - started < 30
    assert str(error.value) == (
        f"Authentication failed for user 'fink_user' on {broker.bootstrap} (SASL SCRAM-SHA-512): "
        "check the username and password Fink gave you."
    )
    assert not (tmp_path / "alerts").exists()


def test_missing_topic_is_named(broker: LocalKafka, tmp_path: Path) -> None:
    with pytest.raises(KafkaAccessError, match="Topic\\(s\\) fink_no_such_topic_ztf do not exist on"):
        prepare_stream(job_config(broker, tmp_path, ["fink_no_such_topic_ztf"]))


def test_a_query_that_failed_before_the_wait_fails_the_job_and_no_later_one(spark: SparkSession, tmp_path: Path) -> None:
    """The error of a query that died at once reaches its job, and only its job (the session is shared)."""
    failing = (spark.readStream.format("rate").option("rowsPerSecond", 10).load()
               .selectExpr("assert_true(value < 0, 'row ' || value || ' is bad') AS checked")
               .writeStream.format("noop").start())
    with suppress(StreamingQueryException):
        failing.awaitTermination(120)
    assert not failing.isActive
    with pytest.raises(StreamingQueryException, match=r"row \d+ is bad"):
        BatchProgress().wait_for([failing])
    spark.range(3).write.parquet(str(tmp_path / "rows"))
    healthy = (spark.readStream.schema("id BIGINT").parquet(str(tmp_path / "rows")).writeStream.queryName("healthy")
               .format("noop").trigger(availableNow=True).start())
    batches = BatchProgress()
    batches.wait_for([healthy])
    assert batches.totals["healthy"][0] == 3


def test_micro_batches_follow_the_size_of_the_messages(spark, broker: LocalKafka, new_topic, tmp_path: Path,
                                                       caplog) -> None:  # noqa: ANN001
    """A batch is bounded in bytes: the job sizes its batches from the first and newest
    messages (here alerts without cutouts and history, a quarter of the others), meets the
    heavier alerts in between, and after one batch re-sizes: every later batch reads at most
    kafka.max_bytes_per_trigger, and every message lands once."""
    from confluent_kafka import Producer

    saved = next(read_saved_alerts([sample("ztf-2026")]))
    parsed = fastavro.parse_schema(json.loads(saved.schema_text))
    cutouts = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
    light = [{**record, "prv_candidates": None, **{name: {**record[name], "stampData": None} for name in cutouts}}
             for record in saved.records[:2]]
    values = [encode(record, parsed) for record in [light[0], *saved.records, light[1]]]
    key = saved.schema_text.encode()
    topic = new_topic("fink_sizes_ztf")
    producer = Producer(broker.client_config(USER))
    for value in values:
        producer.produce(topic, value=value, key=key)
    producer.flush(10)
    sizes = [len(key) + len(value) for value in values]
    most = 12 * sizes[0]  # twelve light messages, three heavy ones
    assert sum(sizes[:12]) > 2 * most

    with caplog.at_level(logging.INFO, logger="fink_spark"):
        run_job(spark, job_config(broker, tmp_path, [topic], kafka__max_bytes_per_trigger=most))
    lines = [record.getMessage() for record in caplog.records]
    batches = [int(n) for n in re.findall(r"alerts: batch \d+, (\d+) records in", "\n".join(lines))]
    assert "Micro-batches of at most 12 records" in "\n".join(lines)
    (resized,) = [line for line in lines if "micro-batches of at most" in line]  # once
    bound = int(re.search(r"of at most (\d+) records from here", resized).group(1))
    assert bound == most * 12 // sum(sizes[:12])  # from the first batch's bytes
    # batch 1 may have been planned before the restart, with the first bound
    assert batches[0] == 12 and all(count <= bound for count in batches[2:]) and sum(batches) == len(values)
    offsets = [row["kafka_offset"] for row in read_output(spark, tmp_path / "alerts")]
    assert sorted(offsets) == list(range(len(values)))


def test_lsst_alerts_from_2_kb_to_2_mib_in_runs_drain_with_the_default_driver_memory(
        spark, broker: LocalKafka, new_topic, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    """Real LSST alerts without history nor cutouts (2 to 8 kB) and with a long history (the
    samples' detections, 5,900 of them: 2 MiB), in runs, on 2 partitions. With the test
    session's 1 GB driver (spark-submit's default), the job follows the messages' size: its
    batches shrink in the long runs and grow again in the short ones, and every alert lands once."""
    from confluent_kafka import Producer

    assert spark.conf.get("spark.driver.memory", "1g") == "1g"
    saved = next(read_saved_alerts([sample("lsst-2026")]))
    parsed = fastavro.parse_schema(json.loads(saved.schema_text))
    cutouts = [name for name in saved.records[0] if name.startswith("cutout")]
    history = [source for record in saved.records for source in record["prvDiaSources"] or []]
    short = [{**record, "prvDiaSources": None, "prvDiaForcedSources": None, **dict.fromkeys(cutouts)}
             for record in saved.records]
    long = [{**record, "prvDiaSources": list(itertools.islice(itertools.cycle(history), 5900))} for record in saved.records[:2]]
    runs = [short] * 30 + [long] * 8 + [short] * 30 + [long] * 8 + [short] * 30
    records = [replicate(kind[number % len(kind)], LSST, number + 1) for number, kind in enumerate(runs)]
    values = [encode(record, parsed) for record in records]
    assert max(map(len, values)) >= 2 * 2**20 > 8_000 > max(len(value) for value, kind in zip(values, runs) if kind is short)
    topic = new_topic("fink_sizes_lsst", partitions=2)
    producer = Producer({**broker.client_config(USER), "message.max.bytes": 4 * 2**20})
    for number, value in enumerate(values):
        producer.produce(topic, value=value, key=saved.schema_text.encode(), partition=number % 2)
    producer.flush(30)

    with caplog.at_level(logging.INFO, logger="fink_spark"):
        run_job(spark, job_config(broker, tmp_path, [topic], survey="lsst", kafka__max_bytes_per_trigger="4 MiB",
                                  kafka__max_offsets_per_trigger=40))
    lines = "\n".join(record.getMessage() for record in caplog.records)
    bounds = [int(count) for count in re.findall(r"micro-batches of at most (\d+) records from here", lines)]
    assert "Micro-batches of at most 40 records" in lines  # from the first and newest messages: short ones
    assert bounds[0] < 40 and max(bounds[1:], default=0) > bounds[0], lines  # down in a long run, up after it
    kept = [row["diaSourceId"] for row in read_output(spark, tmp_path / "alerts")]
    assert sorted(kept) == sorted(record["diaSourceId"] for record in records)
