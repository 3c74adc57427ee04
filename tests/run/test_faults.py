"""What real nights bring: crashes, poison messages, wrong credentials, ACLs, secrets.

These tests run the job as users do (./spark-submit.sh) where a process must die."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Producer
from conftest import PASSWORD, USER, job_config, read_table, run_job, sample
from reference import read_alerts

from fink_spark.cli import main as cli
from fink_spark.errors import KafkaAccessError
from fink_spark.paths import PROJECT_ROOT, SCHEMAS_DIR
from fink_spark.run.audit import audit
from fink_spark.run.stream import prepare_stream
from fink_spark.surveys import ZTF
from fink_spark.testing.local_broker import LocalKafka
from fink_spark.testing.publisher import encode, publish


def stream_config(broker: LocalKafka, tmp_path: Path, topics: list[str], **extra: object) -> Path:
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps({
        "survey": "ztf",
        "kafka": {"servers": broker.bootstrap, "username": USER, "password_env": "FINK_TEST_PASSWORD",
                  "group_id": "fink_user_spark", "topics": topics, "max_offsets_per_trigger": 25},
        "output": {"table": {"path": str(tmp_path / "warehouse"), "checkpoint": str(tmp_path / "chk")},
                   "console": {"enabled": False}},
        "trigger": {"processing_time": "1 second"},
        **extra,
    }))
    return config


def start_job(config: Path, *options: str, conf: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    command = [str(PROJECT_ROOT / "spark-submit.sh"), "--master", "local[2]", *conf,
               "jobs/stream.py", "--config", str(config), *options]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "FINK_TEST_PASSWORD": PASSWORD})


def committed_batches(checkpoint: Path) -> int:
    """Micro-batches the job has committed (its checkpoint's commit log)."""
    commits = checkpoint / "alerts" / "commits"
    return len([p for p in commits.iterdir() if p.name.isdigit()]) if commits.exists() else 0


def kill_9_then_finish(config: Path, checkpoint: Path, crashes: int) -> int:
    """Start the job and kill -9 it `crashes` times, each a few batches on at a random moment
    (mid-batch, mid-commit), then run it to the end of the topics; returns the kills made."""
    chooser = random.Random(7)
    killed = 0
    for _ in range(crashes):
        job = start_job(config)
        target = committed_batches(checkpoint) + chooser.randint(1, 3)
        deadline = time.monotonic() + 180
        while committed_batches(checkpoint) < target and time.monotonic() < deadline and job.poll() is None:
            time.sleep(chooser.uniform(0.05, 0.3))
        time.sleep(chooser.uniform(0, 1.0))
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        killed += 1
    finished = start_job(config, "--available-now")
    output, _ = finished.communicate(timeout=600)
    assert finished.returncode == 0, output[-3000:]
    return killed


@pytest.mark.subprocess
def test_kill_9_mid_stream_loses_nothing_and_duplicates_nothing(spark, broker, new_topic, tmp_path: Path,  # noqa: ANN001
                                                                 monkeypatch, capsys) -> None:  # noqa: ANN001
    """Killed anywhere: between a batch's table commit and Spark's, or while the quarantine of
    a batch is written beside the stream (a poisoned topic is read with the alerts: every
    batch has some)."""
    topic, poisoned = new_topic("fink_crash_ztf", partitions=2), new_topic("fink_crash_poison_ztf", partitions=2)
    sent = publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=100)  # 400 alerts
    producer = Producer(broker.client_config(USER))
    for number in range(40):
        producer.produce(poisoned, key=(SCHEMAS_DIR / "ztf" / "distribution_schema_0p2.avsc").read_bytes(),
                         value=b"\x07poison %d" % number, partition=number % 2)
    producer.flush(10)
    config = stream_config(broker, tmp_path, [topic, poisoned])
    assert kill_9_then_finish(config, tmp_path / "chk", crashes=3) == 3
    rows = read_table(tmp_path / "warehouse").select(["candid", "kafka_partition", "kafka_offset"]).to_pylist()
    assert len(rows) == sent == len({row["candid"] for row in rows})
    assert len({(row["kafka_partition"], row["kafka_offset"]) for row in rows}) == sent
    quarantine = read_table(tmp_path / "warehouse", table="ztf.quarantine").to_pylist()
    assert sorted(row["value"] for row in quarantine) == sorted(b"\x07poison %d" % number for number in range(40))
    assert {row["reject_reason"] for row in quarantine} == {"value does not decode with the writer schema its key names"}
    assert not list((tmp_path / "chk" / "fink_spark" / "quarantine_pending").glob("*.json"))
    # the audit, through the command, with the broker: every offset once, nothing unread
    monkeypatch.setenv("FINK_TEST_PASSWORD", PASSWORD)
    capsys.readouterr()
    cli(["audit", "--config", str(config), "--json"])  # exits 1 if anything is missing
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] and report["duplicates"] == 0 and report["missing"] == []
    assert report["accounted"] == report["read"] == sent + 40
    assert all(partition["unread"] == 0 for partition in report["partitions"])
    # every reader that knows nothing of fink-spark sees the same: polars, DuckDB, Spark's Iceberg source
    import duckdb
    import polars as pl

    table = iceberg_table(tmp_path / "warehouse")
    assert pl.scan_iceberg(table).select(pl.col("candid").n_unique(), pl.len()).collect().row(0) == (sent, sent)
    arrow = table.scan(selected_fields=("candid",)).to_arrow()  # noqa: F841 - DuckDB reads it by name
    assert duckdb.sql("SELECT count(DISTINCT candid), count(*) FROM arrow").fetchall() == [(sent, sent)]
    assert spark.read.format("iceberg").load(table.metadata_location).select("candid").distinct().count() == sent


@pytest.mark.subprocess
def test_kill_9_with_a_table_per_filter_puts_each_alert_once_in_each_table_it_passes(
        broker, new_topic, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """One pass, three filters: one for every table, two with a table each that overlap; an
    alert that passes both is a row of each, once, through kill -9."""
    topic = new_topic("fink_split_ztf", partitions=2)
    sent = publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=100)  # 400 alerts
    shared, bright, faint = "candidate.ndethist > 50", "candidate.magpsf < 18.1", "candidate.magpsf > 18"
    config = stream_config(broker, tmp_path, [topic], filters=[
        shared, {"expression": bright, "table": "bright"}, {"expression": faint, "table": "faint"}])
    assert kill_9_then_finish(config, tmp_path / "chk", crashes=2) == 2
    originals = read_alerts(sample("ztf-0p2"))
    for table, passes in (("bright", lambda c: c["magpsf"] < 18.1), ("faint", lambda c: c["magpsf"] > 18)):
        rows = read_table(tmp_path / "warehouse", ["candidate", "kafka_partition", "kafka_offset"], f"ztf.{table}").to_pylist()
        expected = 100 * sum(1 for alert in originals if alert["candidate"]["ndethist"] > 50 and passes(alert["candidate"]))
        assert expected == 200 and len(rows) == expected  # 18.03 is in both
        assert len({(row["kafka_partition"], row["kafka_offset"]) for row in rows}) == expected
        assert all(row["candidate"]["ndethist"] > 50 and passes(row["candidate"]) for row in rows)
    assert not read_table(tmp_path / "warehouse", ["candid"]).num_rows  # no 'alerts' table: each filter has its own
    monkeypatch.setenv("FINK_TEST_PASSWORD", PASSWORD)
    capsys.readouterr()
    cli(["audit", "--config", str(config), "--json"])  # exits 1 if anything is missing
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] and report["duplicates"] == 0 and report["accounted"] == report["read"] == sent
    assert sum(partition["kept"] for partition in report["partitions"]) == 300  # 16.73, 18.03 and 18.75, 100 each
    assert report["rejected_by"] == {f"filters[0] ({shared})": 100, "no table's filter (bright, faint)": 0}
    cli(["status", "--config", str(config), "--json"])
    yields = {item["filter"]: [item["reached"], item["passed"]] for item in json.loads(capsys.readouterr().out)["yields"]}
    assert yields == {f"filters[0] ({shared})": [400, 300], f"filters[1] ({bright})": [300, 200],
                      f"filters[2] ({faint})": [300, 200]}


def data_files(warehouse: Path) -> int:
    """The live data files of the alerts table (those its current snapshot references)."""
    return len({task.file.file_path for task in iceberg_table(warehouse).scan().plan_files()})


def iceberg_table(warehouse: Path):  # noqa: ANN201
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog("fink", uri=f"sqlite:///{warehouse}/catalog.db").load_table("ztf.alerts")


@pytest.mark.subprocess
def test_maintenance_beside_the_live_stream_loses_and_duplicates_nothing_and_compacts(
    spark, broker, new_topic, tmp_path: Path,  # noqa: ANN001
) -> None:
    topic = new_topic("fink_maintained_ztf", partitions=2)
    sent = publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=200)  # 800 alerts
    config = stream_config(broker, tmp_path, [topic])
    job = start_job(config)
    maintain = [str(PROJECT_ROOT / ".venv" / "bin" / "fink-spark"), "maintain", "--config", str(config),
                "--master", "local[1]", "--snapshot-age-hours", "0", "--retain-snapshots", "1"]
    runs = []
    try:
        deadline = time.monotonic() + 300
        while committed_batches(tmp_path / "chk") < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        while job.poll() is None and committed_batches(tmp_path / "chk") < 24 and time.monotonic() < deadline:
            # maintenance while micro-batches keep committing (25 alerts each)
            runs.append(subprocess.run(maintain, cwd=tmp_path, capture_output=True, text=True, timeout=300))
            causes = [line for line in runs[-1].stderr.splitlines() if "Exception" in line or "Caused by" in line]
            assert runs[-1].returncode == 0, "\n".join(dict.fromkeys(causes)) or runs[-1].stderr[-3000:]
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert len(runs) >= 1 and "files rewritten" in runs[0].stdout
    # alerts the next run appends as new files, even if the killed job had read every one
    sent += publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=25, first_copy=200)
    finished = start_job(config, "--available-now")
    output, _ = finished.communicate(timeout=600)
    assert finished.returncode == 0, output[-3000:]
    before = data_files(tmp_path / "warehouse")
    last = subprocess.run(maintain, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, last.stderr[-3000:]
    rows = read_table(tmp_path / "warehouse", ["candid", "kafka_partition", "kafka_offset"]).to_pylist()
    assert len(rows) == sent == len({row["candid"] for row in rows})
    assert len({(row["kafka_partition"], row["kafka_offset"]) for row in rows}) == sent
    # fewer, larger files; old snapshots expired, but never the stream's newest append
    assert data_files(tmp_path / "warehouse") < before
    # left: the stream's newest append, then only maintenance's own commits (a rewrite with partial
    # progress may commit more than once)
    snapshots = sorted(iceberg_table(tmp_path / "warehouse").snapshots(), key=lambda snapshot: snapshot.sequence_number)
    appends = [snapshot for snapshot in snapshots if snapshot.summary.additional_properties.get("fink-spark.writer")]
    assert len(appends) == 1 and snapshots[0] == appends[0]
    assert all(snapshot.summary.operation.value == "replace" for snapshot in snapshots[1:]), snapshots


def test_every_kind_of_poison_is_quarantined(spark, broker, new_topic, tmp_path: Path) -> None:  # noqa: ANN001
    topic = new_topic("fink_poison_all_ztf")
    schema_2026 = (SCHEMAS_DIR / "ztf" / "fink_ztf_transfer_2026-03.avsc").read_text()
    schema_0p2 = (SCHEMAS_DIR / "ztf" / "distribution_schema_0p2.avsc").read_text()
    alert = read_alerts(sample("ztf-2026"))[0]
    good = encode(alert, fastavro.parse_schema(json.loads(schema_2026)))
    messages = [
        (schema_2026.encode(), good),                              # 0: a genuine alert
        (schema_2026.encode(), random.Random(1).randbytes(5000)),  # 1: random bytes
        (schema_2026.encode(), good[: len(good) // 2]),            # 2: truncated
        (schema_2026.encode(), b""),                               # 3: empty
        (schema_2026.encode(), None),                              # 4: null value (a tombstone)
        (b"7.7_0.0.1", good),                                      # 5: key naming an unknown schema version
        (schema_0p2.encode(), good),                               # 6: bytes written with another schema
        (b"{not json", good),                                      # 7: key that is not a valid schema
        (schema_2026.encode(), good),                              # 8: a genuine alert again
    ]
    producer = Producer({**broker.client_config(USER), "message.max.bytes": 10_000_000})
    for key, value in messages:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0
    output = run_job(spark, job_config(broker, tmp_path, [topic], schema=str(SCHEMAS_DIR / "ztf" / "fink_ztf_transfer_2026-03.avsc")))
    alerts = spark.read.parquet(str(tmp_path / "alerts")).select("kafka_offset", "candid").collect()
    assert sorted((row.kafka_offset, row.candid) for row in alerts) == [(0, alert["candid"]), (8, alert["candid"])]
    quarantine = {row.kafka_offset: row.reject_reason for row in spark.read.parquet(str(tmp_path / "alerts_quarantine")).collect()}
    undecodable = "value does not decode with the writer schema its key names"
    assert quarantine[1] == quarantine[2] == quarantine[6] == undecodable
    assert quarantine[3] == "empty value" and quarantine[4] == "null value"
    assert quarantine[5] == "key names schema version 7.7_0.0.1, which fink-spark does not bundle"
    assert quarantine[7].startswith("key is not a valid Avro schema")
    assert sorted(quarantine) == [1, 2, 3, 4, 5, 6, 7]
    assert "2 alerts, 7 quarantined" in output


@pytest.fixture(scope="module")
def acl_broker():  # noqa: ANN201
    """A broker with KRaft's StandardAuthorizer and Fink-like ACLs: fink_user may read only
    fink_allowed_ztf, with only its own group id."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType, ResourceType

    with LocalKafka(users={USER: PASSWORD}, authorizer=True) as kafka:
        kafka.create_topics(["fink_allowed_ztf", "fink_forbidden_ztf"])
        principal = f"User:{USER}"
        acls = [
            AclBinding(ResourceType.TOPIC, "fink_allowed_ztf", ResourcePatternType.LITERAL, principal, "*",
                       AclOperation.READ, AclPermissionType.ALLOW),
            AclBinding(ResourceType.GROUP, "fink_user_spark", ResourcePatternType.LITERAL, principal, "*",
                       AclOperation.READ, AclPermissionType.ALLOW),
        ]
        admin = AdminClient(kafka.client_config())
        for future in admin.create_acls(acls).values():
            future.result(timeout=30)
        publish(kafka.client_config(), "fink_allowed_ztf", [sample("ztf-0p2")], ZTF)
        yield kafka


def test_acls_like_finks_a_readable_topic_and_a_forbidden_one(spark, acl_broker, tmp_path: Path) -> None:  # noqa: ANN001
    run_job(spark, job_config(acl_broker, tmp_path / "ok", ["fink_allowed_ztf"]))
    assert spark.read.parquet(str(tmp_path / "ok" / "alerts")).count() == 4
    with pytest.raises(KafkaAccessError) as error:
        prepare_stream(job_config(acl_broker, tmp_path / "no", ["fink_allowed_ztf", "fink_forbidden_ztf"]))
    assert str(error.value) == (
        f"User 'fink_user' is not authorized to read topic fink_forbidden_ztf on {acl_broker.bootstrap}: "
        "ask Fink for access, or remove it from 'kafka.topics'."
    )


def test_topics_lists_what_the_credentials_may_read(acl_broker, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    saved = tmp_path / "ztf_credentials.yml"
    saved.write_text(f"username: {USER}\npassword: {PASSWORD}\nservers: {acl_broker.bootstrap}\ngroupid: fink_user_spark\n")
    cli(["topics", "--credentials", str(saved)])
    printed = [[cell.strip() for cell in line.split(" | ")] for line in capsys.readouterr().out.splitlines()]
    assert printed == [["topic", "partitions", "end offsets (sum)", "alerts held"], ["fink_allowed_ztf", "1", "4", "4"]]


def free_port() -> int:
    from fink_spark.testing.local_broker import free_port as port

    return port()


@pytest.mark.subprocess
def test_the_password_never_shows(spark, broker, new_topic, tmp_path: Path) -> None:  # noqa: ANN001
    """Logs, console, checkpoint, event log, Spark UI environment and SQL pages: no password anywhere."""
    import urllib.request

    topic = new_topic("fink_secret_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=5)
    config = stream_config(broker, tmp_path, [topic])
    data = json.loads(config.read_text())
    data["output"]["console"] = {"enabled": True, "rows": 5}
    config.write_text(json.dumps(data))
    port = free_port()
    events = tmp_path / "events"
    events.mkdir()
    job = start_job(config, conf=("--conf", "spark.ui.enabled=true", "--conf", f"spark.ui.port={port}",
                                  "--conf", "spark.eventLog.enabled=true", "--conf", f"spark.eventLog.dir=file:{events}"))
    pages = []
    deadline = time.monotonic() + 180
    while committed_batches(tmp_path / "chk") < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    for page in ("environment/", "SQL/", "StreamingQuery/", "jobs/"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{page}", timeout=30) as response:
            pages.append(response.read().decode("utf-8", "replace"))
    os.killpg(job.pid, signal.SIGTERM)
    output, _ = job.communicate(timeout=120)
    assert "environment" in pages[0].lower() and output
    searched = {"job output": output, **{f"UI page {i}": page for i, page in enumerate(pages)}}
    for folder in (tmp_path / "chk", events, tmp_path / "warehouse"):
        for path in folder.rglob("*"):
            if path.is_file():
                searched[str(path)] = path.read_bytes().decode("latin-1")
    assert len(searched) > 10
    leaks = [where for where, text in searched.items() if PASSWORD in text]
    assert leaks == []


def test_offsets_deleted_by_retention_fail_clearly_or_are_skipped_and_recorded(spark, broker, new_topic, tmp_path: Path) -> None:  # noqa: ANN001, E501
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    topic = new_topic("fink_retention_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=5)  # offsets 0-19
    run_job(spark, job_config(broker, tmp_path, [topic]))
    publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=5)  # offsets 20-39
    admin = AdminClient(broker.client_config())
    for future in admin.delete_records([TopicPartition(topic, 0, 30)]).values():
        future.result(timeout=30)  # retention took 20-29 before the job read them
    with pytest.raises(KafkaAccessError, match="Offsets this checkpoint has not read yet are gone from the broker"):
        run_job(spark, job_config(broker, tmp_path, [topic]))
    run_job(spark, job_config(broker, tmp_path, [topic], kafka__on_data_loss="skip"))
    offsets = sorted(row.kafka_offset for row in spark.read.parquet(str(tmp_path / "alerts")).select("kafka_offset").collect())
    assert offsets == list(range(20)) + list(range(30, 40))
    skipped = json.loads((tmp_path / "checkpoints" / "fink_spark" / "skipped_offsets.json").read_text())
    assert skipped[0]["gaps"] == [{"topic": topic, "partition": 0, "from_offset": 20, "to_offset": 30}]
    result = audit(job_config(broker, tmp_path, [topic]))
    assert result.complete and result.retention == [{"topic": topic, "partition": 0, "first": 20, "last": 29}]
    assert [(p.kept, p.lost_to_retention, p.read) for p in result.partitions] == [(30, 10, 40)]


@pytest.mark.subprocess
def test_broker_outage_the_job_waits_and_resumes_by_itself(spark, tmp_path: Path) -> None:  # noqa: ANN001
    topic = "fink_outage_ztf"
    with LocalKafka(users={USER: PASSWORD}) as kafka:
        kafka.create_topics([topic])
        publish(kafka.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=25)  # 100 alerts
        job = start_job(stream_config(kafka, tmp_path, [topic]))
        try:
            deadline = time.monotonic() + 180
            while committed_batches(tmp_path / "chk") < 1 and time.monotonic() < deadline:
                time.sleep(0.3)
            kafka.pause()
            time.sleep(15)  # longer than the 1 s trigger: the job's reads fail and are retried
            assert job.poll() is None, "the job died during the outage"
            kafka.resume()
            publish(kafka.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=25)  # 100 more
            while time.monotonic() < deadline + 120:
                if read_table(tmp_path / "warehouse", ["kafka_offset"]).num_rows >= 200:
                    break
                time.sleep(1)
        finally:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    offsets = read_table(tmp_path / "warehouse", ["kafka_offset"])["kafka_offset"].to_pylist()
    assert sorted(offsets) == list(range(200))


@pytest.mark.broker  # a TLS broker of its own
def test_sasl_ssl_with_a_ca_named_in_the_config(spark, tmp_path: Path) -> None:  # noqa: ANN001
    with LocalKafka(users={USER: PASSWORD}, tls=True) as kafka:
        kafka.create_topics(["fink_tls_ztf"])
        publish(kafka.client_config(USER), "fink_tls_ztf", [sample("ztf-0p2")], ZTF)
        config = job_config(kafka, tmp_path, ["fink_tls_ztf"], kafka__ssl_ca=str(kafka.ca_file))
        assert config.kafka.security_protocol == "SASL_SSL"
        run_job(spark, config)
        assert spark.read.parquet(str(tmp_path / "alerts")).count() == 4
        with pytest.raises(KafkaAccessError, match="Cannot reach the Kafka brokers"):  # TLS without trusting the CA
            prepare_stream(job_config(kafka, tmp_path / "no_ca", ["fink_tls_ztf"]))
