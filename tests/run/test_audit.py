"""`fink-spark audit` after real runs: every offset read is kept, quarantined or rejected,
exactly once; a row lost from the table is named by its offset, a row written twice
counted, and `--repair` puts both right."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Producer
from conftest import PASSWORD, USER, job_config, run_job, sample
from pyspark.sql import SparkSession
from reference import read_alerts

from fink_spark.cli import main
from fink_spark.run.audit import audit
from fink_spark.run.ledger import Ledger
from fink_spark.state import STREAM_QUERY, CheckpointFiles
from fink_spark.surveys import ZTF
from fink_spark.table.catalog import Tables
from fink_spark.testing.local_broker import LocalKafka
from fink_spark.testing.publisher import publish, read_saved_alerts

FAINT, BRIGHT = 19.5, 18.5  # the first filter rejects alerts fainter than FAINT, the second those fainter than BRIGHT
FILTERS = [f"candidate.magpsf < {FAINT}", f"candidate.magpsf < {BRIGHT}"]


def run_audit(tmp_path: Path, *flags: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stopped:
        main(["audit", "--survey", "ztf", "--format", "iceberg", "--output", str(tmp_path / "warehouse"),
              "--checkpoint", str(tmp_path / "checkpoints"), *flags])
        raise SystemExit(0)
    return int(stopped.value.code or 0), out.getvalue()


def test_audit_accounts_for_every_offset_and_names_what_is_lost(spark: SparkSession, broker: LocalKafka, new_topic,  # noqa: ANN001
                                                                tmp_path: Path, caplog, monkeypatch, capsys) -> None:
    topic = new_topic("fink_audit_ztf", partitions=2)
    published = publish(broker.client_config(USER), topic, [sample("ztf-2026")], ZTF, copies=2)
    producer = Producer(broker.client_config(USER))
    for partition in (0, 1):
        producer.produce(topic, value=b"\x07garbage", key=b"not a schema", partition=partition)
    producer.flush(10)
    magnitudes = [record["candidate"]["magpsf"] for saved in read_saved_alerts([sample("ztf-2026")]) for record in saved.records]
    bright = 2 * sum(magnitude < BRIGHT for magnitude in magnitudes)
    faint = 2 * sum(magnitude >= FAINT for magnitude in magnitudes)
    assert 0 < bright < published - faint < published
    config = job_config(broker, tmp_path, [topic], filters=FILTERS)
    config = replace(config, output=replace(config.output, format="iceberg", partition_by=("topic", "night"),
                                            path=str(tmp_path / "warehouse")))
    with caplog.at_level(logging.INFO):
        run_job(spark, config)
    assert any(record.getMessage().startswith(f"batch 0 yields: filters[0] ({FILTERS[0]}) passed ")
               for record in caplog.records)

    result = audit(config)
    assert result.complete
    assert sum(p.kept for p in result.partitions) == bright
    assert sum(p.quarantined for p in result.partitions) == 2
    assert sum(p.rejected for p in result.partitions) == published - bright
    assert result.accounted == published + 2 == sum(p.read for p in result.partitions)
    assert result.rejected_by == {f"filters[0] ({FILTERS[0]})": faint, f"filters[1] ({FILTERS[1]})": published - bright - faint}
    status, text = run_audit(tmp_path)
    lines = text.splitlines()
    assert status == 0 and len(lines) == 5
    assert lines[0].startswith(f"{topic}[0] offsets 0 to ") and lines[1].startswith(f"{topic}[1] offsets 0 to ")
    assert lines[2:4] == [f"rejected by filters[0] ({FILTERS[0]}): {faint}",
                          f"rejected by filters[1] ({FILTERS[1]}): {published - bright - faint}"]
    assert lines[4] == f"complete: each of the {published + 2} offsets read is accounted for once"

    # a kept alert lost from the table, another written twice
    table = Tables.of(config.output, "ztf").name("alerts")
    lost, twice = spark.sql(f"SELECT kafka_partition, kafka_offset, candid FROM {table} "
                            "ORDER BY kafka_partition, kafka_offset").collect()[:2]
    spark.sql(f"INSERT INTO {table} SELECT * FROM {table} WHERE kafka_partition = {twice[0]} AND kafka_offset = {twice[1]}")
    spark.sql(f"DELETE FROM {table} WHERE kafka_partition = {lost[0]} AND kafka_offset = {lost[1]}")
    status, text = run_audit(tmp_path, "--json")
    report = json.loads(text)
    assert status == 1 and not report["complete"]
    assert report["duplicates"] == 1 and report["missing_count"] == 1
    assert report["accounted"] == published + 1 and report["lost_to_retention"] == []
    missing = [(gap["partition"], offset) for gap in report["missing"] for offset in range(gap["first"], gap["last"] + 1)]
    assert (lost[0], lost[1]) in missing and len(missing) == 1 + report["rejected_in_missing"]
    status, text = run_audit(tmp_path)
    assert status == 1 and "MISSING" in text and "DUPLICATED" in text
    assert text.splitlines()[-1].startswith("INCOMPLETE: 1 of ")

    # repaired as a user would: the job's configuration, the command
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({
        "survey": "ztf", "filters": FILTERS,
        "kafka": {"servers": broker.bootstrap, "username": USER, "password_env": "FINK_TEST_PASSWORD", "topics": [topic]},
        "output": {"table": {"path": str(tmp_path / "warehouse"), "checkpoint": str(tmp_path / "checkpoints")}},
    }))
    # each filter's yield so far, as fink-spark status gives it (before the repair reads anything again)
    monkeypatch.setenv("FINK_TEST_PASSWORD", PASSWORD)
    capsys.readouterr()
    main(["status", "--config", str(job), "--json"])
    status_report = json.loads(capsys.readouterr().out)
    assert status_report["yields"] == [
        {"filter": f"filters[0] ({FILTERS[0]})", "reached": published, "passed": published - faint},
        {"filter": f"filters[1] ({FILTERS[1]})", "reached": published - faint, "passed": bright}]
    assert status_report["lag"] == 0
    main(["status", "--config", str(job)])
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"yields so far: filters[0] ({FILTERS[0]}) passed {published - faint} of {published} "
        f"({(published - faint) / published:.0%}), filters[1] ({FILTERS[1]}) passed {bright} of {published - faint} "
        f"({bright / (published - faint):.0%})")
    repaired = subprocess.run([str(Path(sys.executable).parent / "fink-spark"), "audit", "--config", str(job), "--repair",
                               "--master", "local[1]"], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "FINK_TEST_PASSWORD": PASSWORD})
    said = repaired.stdout.splitlines()
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr[-3000:]
    assert said[0].startswith(f"repair: read again {len(missing)} offsets") and said[0].endswith(": 1 kept by the filters")
    assert said[1] == "repair: 1 duplicated rows removed, one copy of each kept"
    assert said[-1] == f"complete: each of the {published + 2} offsets read is accounted for once"
    assert PASSWORD not in repaired.stdout + repaired.stderr
    spark.sql(f"REFRESH TABLE {table}")
    rows = spark.sql(f"SELECT kafka_partition, kafka_offset, candid FROM {table}").collect()
    assert len(rows) == bright == len({(row[0], row[1]) for row in rows})
    assert tuple(lost) in {tuple(row) for row in rows}
    status, text = run_audit(tmp_path, "--json")
    assert status == 0 and json.loads(text)["rejected_by"] == result.rejected_by  # each rejection counted once



FAINTEST = max(alert["candidate"]["magpsf"] for alert in read_alerts(sample("ztf-2026")))


def bright_but_raises_on_the_faintest(candidate: pd.DataFrame) -> pd.Series:
    """A user's filter with a bug: it raises on any batch that holds the sample's faintest alert."""
    if (candidate["magpsf"] == FAINTEST).any():
        raise ValueError("a magnitude this filter cannot take\n(a second line the reason leaves out)")
    return candidate["magpsf"] < BRIGHT


def test_a_filter_that_raises_sends_its_batch_to_the_quarantine_and_the_job_goes_on(
        spark: SparkSession, broker: LocalKafka, new_topic, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    topic = new_topic("fink_raising_filter_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-2026")], ZTF)
    alerts = read_alerts(sample("ztf-2026"))  # offsets 0-30, in micro-batches of at most 10
    faintest = next(i for i, alert in enumerate(alerts) if alert["candidate"]["magpsf"] == FAINTEST)
    path = f"{__name__}.bright_but_raises_on_the_faintest"
    config = job_config(broker, tmp_path, [topic], filters=[{"fink_filter": path}], kafka__max_offsets_per_trigger=10)
    config = replace(config, output=replace(config.output, format="iceberg", partition_by=("topic", "night"),
                                            path=str(tmp_path / "warehouse")))
    with caplog.at_level(logging.WARNING):
        run_job(spark, config)
    tables = Tables.of(config.output, "ztf")
    kept = {row.kafka_offset for row in spark.sql(f"SELECT kafka_offset FROM {tables.name('alerts')}").collect()}
    quarantine = spark.sql(f"SELECT kafka_offset, reject_reason, value FROM {tables.name('quarantine')}").collect()
    batches = Ledger(CheckpointFiles.at(config.output.checkpoint), STREAM_QUERY).entries()
    assert len(batches) >= 4  # so that the bug hits one batch of several
    in_bad_batch = next(set(range(first, end)) for entry in batches for _, _, first, end in entry["ranges"]
                        if first <= faintest < end)
    quarantined = {row.kafka_offset for row in quarantine}  # the task's Arrow batch the function raised on
    assert faintest in quarantined and quarantined <= in_bad_batch
    assert quarantined == set(range(min(quarantined), max(quarantined) + 1))
    assert {row.reject_reason for row in quarantine} == {
        f"filters[0] ({path}) raised ValueError: a magnitude this filter cannot take"}
    assert all(row.value for row in quarantine)  # the records as Fink sent them, to read again
    assert kept == {i for i, alert in enumerate(alerts) if alert["candidate"]["magpsf"] < BRIGHT} - quarantined
    said = [record.getMessage() for record in caplog.records if "raised on" in record.getMessage()]
    assert said == [f"filters[0] ({path}) raised on {len(quarantined)} alerts of the micro-batch (ValueError: a "
                    "magnitude this filter cannot take): they go to the quarantine"]
    result = audit(config)
    assert result.complete and sum(p.quarantined for p in result.partitions) == len(quarantined)
