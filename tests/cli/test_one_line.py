"""A fink-client user's one-line commands against the real broker: no YAML, a start at a
time, a limit, the lag, `status` and `topics`."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, read_table, sample
from reference import read_alerts

from fink_spark.cli import main as cli
from fink_spark.cli.commands import add_stream_arguments, stream_plan
from fink_spark.run.stream import run_stream
from fink_spark.state import PENDING_QUARANTINE
from fink_spark.surveys import ZTF
from fink_spark.testing.publisher import publish


@pytest.fixture
def credentials(broker, tmp_path: Path) -> Path:  # noqa: ANN001
    """What fink-client's registration saves, for the test broker."""
    saved = tmp_path / "ztf_credentials.yml"
    saved.write_text(f"username: {USER}\npassword: {PASSWORD}\nservers: {broker.bootstrap}\ngroupid: {USER}_spark\n")
    return saved


def user(credentials: Path) -> list[str]:
    """A registered fink-client user's flags (the tests' topic names do not end with the survey)."""
    return ["--survey", "ztf", "--credentials", str(credentials)]


def one_line(spark, *flags: str) -> None:  # noqa: ANN001
    """`fink-spark stream <flags>`, run in the tests' Spark session."""
    parser = argparse.ArgumentParser()
    add_stream_arguments(parser)
    run_stream(spark, stream_plan(parser.parse_args(list(flags))))


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split(" | ")]


def ids(warehouse: Path) -> list[int]:
    return read_table(warehouse, ["candid"]).column("candid").to_pylist()


def test_flags_alone_stream_every_alert_and_status_shows_no_lag(spark, broker, new_topic, credentials: Path,  # noqa: ANN001
                                                                tmp_path: Path, capsys) -> None:  # noqa: ANN001
    topics = [new_topic("fink_sn_flags_ztf", partitions=2), new_topic("fink_kn_flags_ztf")]
    sent = sum(publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=3) for topic in topics)
    flags = [*user(credentials), "--topics", ",".join(topics), "--output", str(tmp_path / "alerts")]
    one_line(spark, *flags, "--available-now", "--no-console")
    kept = ids(tmp_path / "alerts")
    assert len(kept) == sent == 24 and len(set(kept)) == 12  # each alert once per topic
    capsys.readouterr()
    cli(["status", *flags])
    printed = capsys.readouterr().out.splitlines()
    assert cells(printed[0])[:5] == ["topic", "partition", "checkpoint at", "end offset", "lag"]
    rows = [cells(line) for line in printed[1:-1]]
    assert sorted((row[0], row[1]) for row in rows) == sorted([(topics[0], "0"), (topics[0], "1"), (topics[1], "0")])
    assert all(row[2] == row[3] and row[4] == "0" and row[5] == "-" for row in rows)
    assert printed[-1] == f"0 alerts not read yet (checkpoint {tmp_path / 'alerts' / 'checkpoints'})"
    # A job killed before it appended its last batches' quarantine leaves their positions in the checkpoint
    pending = tmp_path / "alerts" / "checkpoints" / PENDING_QUARANTINE
    pending.mkdir(parents=True)
    for batch_id, offsets in ((3, [7, 9]), (4, [2])):
        records = [[topics[0], 0, offset, "empty value"] for offset in offsets]
        (pending / f"{batch_id}.json").write_text(json.dumps({"batch": batch_id, "records": records}))
    cli(["status", *flags])
    assert capsys.readouterr().out.splitlines()[-1] == (
        "3 quarantined records of 2 micro-batches not in the quarantine yet: a running job appends them within a "
        "minute, a stopped one at its next start")
    shutil.rmtree(pending)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    publish(broker.client_config(USER), topics[1], [sample("ztf-0p2")], ZTF)
    cli(["status", *flags])
    printed = capsys.readouterr().out.splitlines()
    late = next(cells(line) for line in printed if line.startswith(topics[1]))
    assert late[4] == "4"
    oldest = datetime.strptime(late[5], "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=timezone.utc)
    assert before <= oldest <= datetime.now(timezone.utc)
    assert printed[-1].startswith("4 alerts not read yet")


def test_start_at_a_time_reads_only_later_alerts_and_refuses_a_used_checkpoint(  # noqa: ANN001
        spark, broker, new_topic, credentials: Path, tmp_path: Path) -> None:  # noqa: ANN001
    topic = new_topic("fink_start_at_ztf", partitions=2)
    publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF)
    time.sleep(1.5)
    start = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    later = publish(broker.client_config(USER), topic, [sample("ztf-2026")], ZTF)
    flags = [*user(credentials), "--topics", topic, "--output", str(tmp_path / "alerts"), "--start-at", start]
    one_line(spark, *flags, "--available-now", "--no-console")
    assert sorted(ids(tmp_path / "alerts")) == sorted(alert["candid"] for alert in read_alerts(sample("ztf-2026")))
    assert len(ids(tmp_path / "alerts")) == later
    with pytest.raises(Exception, match=r"--start-at applies to a new checkpoint, and .* has been used: the job would go "
                                        r"on from where it stopped\. Leave out --start-at to go on, or give a new "
                                        r"--checkpoint \(or --output\)"):
        one_line(spark, *flags, "--available-now")


def test_limit_stops_after_n_alerts_and_the_next_run_goes_on(spark, broker, new_topic, credentials: Path,  # noqa: ANN001
                                                           tmp_path: Path, caplog) -> None:  # noqa: ANN001
    topic = new_topic("fink_limited_ztf", partitions=2)
    sent = publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF, copies=50)  # 200
    flags = [*user(credentials), "--topics", topic, "--output", str(tmp_path / "alerts"), "--no-console"]
    with caplog.at_level(logging.INFO, logger="fink_spark"):
        one_line(spark, *flags, "--limit", "10")  # a live job (10 s trigger), stopped by the limit
    assert len(ids(tmp_path / "alerts")) == 10
    assert f"behind: {topic} 190; caught up in about" in caplog.text
    assert "Stopped after 10 alerts kept (--limit 10)" in caplog.text
    one_line(spark, *flags, "--available-now")
    rows = read_table(tmp_path / "alerts", ["candid", "kafka_partition", "kafka_offset"]).to_pylist()
    assert len(rows) == sent == len({(row["kafka_partition"], row["kafka_offset"]) for row in rows})
    assert len({row["candid"] for row in rows}) == sent


def test_partition_by_class_as_fink_clients_transfer_does(spark, broker, new_topic, credentials: Path,  # noqa: ANN001
                                                                tmp_path: Path) -> None:  # noqa: ANN001
    from pyiceberg.expressions import EqualTo

    from fink_spark.table.warehouse import load_pyiceberg

    topic = new_topic("fink_classes_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-2026")], ZTF)
    flags = [*user(credentials), "--topics", topic, "--available-now", "--no-console"]
    one_line(spark, *flags, "--output", str(tmp_path / "alerts"), "--partition-by", "topic,tnsclass")
    table = load_pyiceberg(tmp_path / "alerts")
    assert [field.name for field in table.spec().fields] == ["topic", "tnsclass"]
    classes = {alert["tnsclass"] for alert in read_alerts(sample("ztf-2026"))}  # '(TNS) SN Ia', 'Unknown', ...
    assert len(classes) > 1
    every = {task.file.file_path for task in table.scan().plan_files()}
    for name in classes:
        tasks = list(table.scan(row_filter=EqualTo("tnsclass", name)).plan_files()) if name is not None else []
        chosen = {task.file.file_path for task in tasks}
        assert name is None or (chosen and chosen < every and all(task.file.partition[1] == name for task in tasks))
    old = new_topic("fink_old_classes_ztf")
    publish(broker.client_config(USER), old, [sample("ztf-0p2")], ZTF)
    with pytest.raises(Exception, match=r"'output.table.partition_by' names finkclass, which these alerts do not have"):
        one_line(spark, *user(credentials), "--topics", old, "--available-now",
                 "--output", str(tmp_path / "old"), "--partition-by", "finkclass")
