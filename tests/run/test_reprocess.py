"""Reprocessing saved streams: every input kind, field by field against fastavro; reruns and
interrupted runs leave each alert once."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import fastavro
import pandas as pd
import pytest
from conftest import USER, job_config, parquet_output, run_job, sample
from reference import check_alerts, read_alerts, ztf_mjd

from fink_spark.cli.explore import main as explore
from fink_spark.config.job import parse_config
from fink_spark.errors import ConfigError
from fink_spark.paths import PROJECT_ROOT, SCHEMAS_DIR
from fink_spark.run.audit import audit
from fink_spark.run.inputs import KafkaRange, input_kind
from fink_spark.run.reprocess import reprocess
from fink_spark.surveys import ZTF
from fink_spark.table.read import read_table
from fink_spark.testing.publisher import publish, replicate
from fink_spark.view.sky import cone

SCHEMA_2026 = str(SCHEMAS_DIR / "ztf" / "fink_ztf_transfer_2026-03.avsc")


def config_for(tmp_path: Path, survey: str = "ztf", **extra) -> object:  # noqa: ANN003
    data = {"survey": survey, "output": parquet_output(tmp_path)}
    if survey == "ztf":
        data["schema"] = SCHEMA_2026
    data.update(extra)
    return parse_config(data, kafka_required="kafka" in extra)


def rows_of(spark, tmp_path: Path) -> list[dict]:  # noqa: ANN001
    return [row.asDict(recursive=True) for row in read_table(spark, str(tmp_path / "out")).collect()]


def test_avro_folders_gzipped_or_not_and_multi_alert_parts_resolve_onto_one_table(spark, tmp_path: Path) -> None:  # noqa: ANN001
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    for path in sample("ztf-0p2").glob("*.avro"):
        (zipped / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
    inputs = [str(sample("ztf-2026")), str(zipped), str(sample("ztf-raw-3.3"))]
    assert reprocess(spark, config_for(tmp_path), inputs, [], "saved") == 31 + 4 + 4
    rows = rows_of(spark, tmp_path)
    check_alerts(rows, read_alerts(sample("ztf-2026")) + read_alerts(sample("ztf-0p2")) + read_alerts(sample("ztf-raw-3.3")),
                 "candid", "saved", ztf_mjd)
    raw = {a["candid"] for a in read_alerts(sample("ztf-raw-3.3"))}
    assert all(row["cdsxmatch"] is None and row["finkclass"] is None for row in rows if row["candid"] in raw)


def test_lsst_alerts_reprocess_with_every_field(spark, reprocessed_samples: dict[str, Path]) -> None:  # noqa: ANN001
    rows = [row.asDict(recursive=True) for row in read_table(spark, str(reprocessed_samples["lsst"])).collect()]
    check_alerts(rows, read_alerts(sample("lsst-2026")), "diaSourceId", "fink_explore_lsst",
                 lambda a: a["diaSource"]["midpointMjdTai"])


def test_a_list_of_files(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """Files named one by one (`--input a.avro b.avro`), from several folders, gzipped or not,
    with a name that is a glob pattern's syntax."""
    old, new = sorted(sample("ztf-0p2").glob("*.avro")), sorted(sample("ztf-2026").glob("*.avro"))
    odd = tmp_path / "in" / "night{1},[a]*.avro"
    odd.parent.mkdir()
    shutil.copy(old[1], odd)
    zipped = tmp_path / "in" / (old[2].name + ".gz")
    zipped.write_bytes(gzip.compress(old[2].read_bytes()))
    inputs = [str(old[0]), str(odd), str(zipped), str(new[0])]
    expected = [alert for path in (old[0], old[1], old[2], new[0]) for alert in fastavro.reader(path.open("rb"))]
    assert reprocess(spark, config_for(tmp_path), inputs, [], "files") == len(expected)
    check_alerts(rows_of(spark, tmp_path), expected, "candid", "files", ztf_mjd)


def test_parquet_of_the_live_job_and_a_kafka_offset_range(spark, broker, new_topic, tmp_path: Path) -> None:  # noqa: ANN001
    topic = new_topic("fink_replay_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-2026")], ZTF)
    run_job(spark, job_config(broker, tmp_path / "live", [topic], schema=SCHEMA_2026))
    filters = [{"preset": "magnitude", "max": 18.0}]
    kept = reprocess(spark, config_for(tmp_path / "parquet", filters=filters), [str(tmp_path / "live" / "alerts")], [], "x")
    bright = [a for a in read_alerts(sample("ztf-2026")) if a["candidate"]["magpsf"] <= 18.0]
    assert kept == len(bright) == 11  # alerts written: the filter keeps the bright ones
    check_alerts(rows_of(spark, tmp_path / "parquet"), bright, "candid", topic, ztf_mjd)

    kafka = {"servers": broker.bootstrap, "username": USER, "password": "test-password-4f1c", "topics": [topic]}
    span = KafkaRange.parse(f"{topic}:0=5-12")
    reprocess(spark, config_for(tmp_path / "range", kafka=kafka), [], [span], "unused")
    rows = rows_of(spark, tmp_path / "range")
    assert sorted(row["kafka_offset"] for row in rows) == list(range(5, 12))
    check_alerts(rows, read_alerts(sample("ztf-2026"))[5:12], "candid", topic, ztf_mjd)
    audited = audit(config_for(tmp_path / "range", kafka=kafka))  # the range is audited as the stream's batches are
    assert audited.complete and [(p.topic, p.first, p.end, p.kept) for p in audited.partitions] == [(topic, 5, 12, 7)]


def test_rerun_adds_nothing(spark, tmp_path: Path) -> None:  # noqa: ANN001
    config = config_for(tmp_path)
    assert reprocess(spark, config, [str(sample("ztf-0p2"))], [], "t") == 4
    assert reprocess(spark, config, [str(sample("ztf-0p2"))], [], "t") == 0
    audited = audit(config)  # both runs are in the ledger, and the table holds what they counted
    assert audited.complete and audited.files is not None
    assert audited.lines() == ["reprocessed files, 2 runs: 4 records read, 4 kept, 0 quarantined, 0 rejected",
                               "complete: each of the 4 records of reprocessed files is accounted for once"]
    assert len(rows_of(spark, tmp_path)) == 4


def test_reprocessing_into_a_merged_table_keeps_one_row_per_alert(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """`deduplicate` with an Iceberg table: reprocessing merges copies as the stream does
    (the same sink: a later copy's topic joining its row is the stream's test)."""
    warehouse = tmp_path / "warehouse"
    config = parse_config({"survey": "ztf", "schema": SCHEMA_2026, "output": {"table": {
        "path": str(warehouse), "checkpoint": str(tmp_path / "chk"), "deduplicate": "1 hour"}}}, kafka_required=False)
    folder = sample("ztf-0p2")
    assert reprocess(spark, config, [str(folder), str(folder / "*.avro")], [], "fink_sn_candidates_ztf") == 8  # each twice
    table = read_table(spark, str(warehouse)).select("candid", "topics").collect()
    assert sorted((row.candid, row.topics) for row in table) == sorted(
        (alert["candid"], ["fink_sn_candidates_ztf"]) for alert in read_alerts(folder))


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"The Kafka range 'topic-without-offsets' is not TOPIC:PARTITION=START-END"):
        KafkaRange.parse("topic-without-offsets")
    with pytest.raises(ConfigError, match="The Kafka range 't:0=9-3' has an end offset before its start"):
        KafkaRange.parse("t:0=9-3")

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no .avro, .avro.gz or .parquet file"):
        input_kind(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="No such input"):
        input_kind(str(tmp_path / "missing"))


def write_one_alert_files(folder: Path, copies: int) -> int:
    """fink-client --save style: one alert per file, <objectId>_<candid>.avro, replicated with new ids."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for path in sorted(sample("ztf-0p2").glob("*.avro")):
        with path.open("rb") as handle:
            reader = fastavro.reader(handle)
            sources.append((reader.writer_schema, next(iter(reader))))
    written = 0
    for copy in range(copies):
        for schema, record in sources:
            alert = replicate(record, ZTF, copy)
            with (folder / f"{alert['objectId']}_{alert['candid']}.avro").open("wb") as handle:
                fastavro.writer(handle, schema, [alert])
            written += 1
    return written


def submit_reprocess(config: Path, folder: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(PROJECT_ROOT / "spark-submit.sh"), "--master", "local[2]", "--driver-memory", "1g",
         "jobs/reprocess.py", "--config", str(config), "--input", str(folder), *extra],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


@pytest.mark.subprocess
def test_killed_run_resumes_and_ends_with_each_alert_once(spark, tmp_path: Path) -> None:  # noqa: ANN001
    total = write_one_alert_files(tmp_path / "saved", copies=60)  # 240 files
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps({"survey": "ztf", "schema": SCHEMA_2026,
                                  "output": parquet_output(tmp_path)}))
    job = submit_reprocess(config, tmp_path / "saved", "--files-per-batch", "20")
    log = tmp_path / "out" / "_spark_metadata"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (log.exists() and len([p for p in log.iterdir() if p.name.isdigit()]) >= 2):
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)  # kill -9, mid-run
    job.wait()
    committed = len([p for p in log.iterdir() if p.name.isdigit()])
    assert 2 <= committed < total // 20, "the run was not interrupted mid-way"
    finished = submit_reprocess(config, tmp_path / "saved", "--files-per-batch", "20")
    output, _ = finished.communicate(timeout=600)
    assert finished.returncode == 0, output[-3000:]
    assert "files" in output and "left" in output  # progress lines
    candids = [row.candid for row in spark.read.parquet(str(tmp_path / "out")).select("candid").collect()]
    assert len(candids) == len(set(candids)) == total
    shutil.rmtree(tmp_path / "saved")


@pytest.mark.subprocess
def test_twenty_thousand_one_alert_files_with_a_1g_driver(spark, tmp_path: Path) -> None:  # noqa: ANN001
    total = write_one_alert_files(tmp_path / "saved", copies=5000)
    assert total == 20000
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps({"survey": "ztf", "schema": SCHEMA_2026,
                                  "output": parquet_output(tmp_path)}))
    job = submit_reprocess(config, tmp_path / "saved")
    output, _ = job.communicate(timeout=900)
    assert job.returncode == 0, output[-3000:]
    assert "20000 alerts written to" in output
    assert ", files 20000/20000, " in output  # progress, to the last batch
    shutil.rmtree(tmp_path / "saved")
    candids = spark.read.parquet(str(tmp_path / "out")).select("candid").distinct().count()
    assert candids == 20000


def always_raises(candid: pd.Series) -> pd.Series:
    raise RuntimeError("not today")


def test_a_filter_that_raises_on_saved_files_rejects_their_alerts_and_says_so(spark, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    """Files have no Kafka position to quarantine their records by: counted as rejected, and the log says what to do."""
    config = config_for(tmp_path, filters=[{"fink_filter": f"{__name__}.always_raises"}])
    with caplog.at_level(logging.WARNING):
        assert reprocess(spark, config, [str(sample("ztf-0p2"))], [], "files") == 0
    said = [record.getMessage() for record in caplog.records if "raised on" in record.getMessage()]
    assert said and all("RuntimeError: not today" in line and "reprocess those files once it is fixed" in line
                        for line in said)
    audited = audit(config)
    assert audited.complete and audited.files is not None
    assert (audited.files.records, audited.files.kept, audited.files.quarantined, audited.files.rejected) == (4, 0, 0, 4)


def test_a_users_classifier_adds_its_columns_to_the_table(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """examples/classifier.py as README shows it: every alert kept, with the score it computed, alert by alert."""
    from examples.classifier import young_and_bright

    classifier = {"udf": "examples.classifier:young_and_bright",
                  "columns": ["candidate.magpsf", "candidate.jd", "candidate.jdstarthist"],
                  "returns": {"young_score": "double", "young": "boolean"}}
    config = config_for(tmp_path, filters=[classifier, "young"])  # then keep the young ones
    alerts = read_alerts(sample("ztf-2026"))
    frame = pd.DataFrame([alert["candidate"] for alert in alerts])
    expected = young_and_bright(frame.magpsf, frame.jd, frame.jdstarthist).assign(candid=frame.candid)
    young = expected[expected.young]
    assert 0 < len(young) < len(alerts)
    assert reprocess(spark, config, [str(sample("ztf-2026"))], [], "scored") == len(young)
    rows = {row["candid"]: row for row in rows_of(spark, tmp_path)}
    assert sorted(rows) == sorted(young.candid)
    assert [rows[candid]["young_score"] for candid in young.candid] == pytest.approx(list(young.young_score), rel=1e-6)
    with pytest.raises(ConfigError, match=r"filters\[0\].returns.score: .* one of the types boolean, double"):
        config_for(tmp_path, filters=[{**classifier, "returns": {"score": "decimal"}}])
    with pytest.raises(ConfigError, match=r"filters\[0\] \(examples.classifier:young_and_bright\): unknown column "
                                          r"candidate.magpsff; did you mean candidate.magpsf"):
        reprocess(spark, config_for(tmp_path / "typo", filters=[{**classifier, "columns": ["candidate.magpsff"]}]),
                  [str(sample("ztf-2026"))], [], "scored")


def faint(magpsf: pd.Series) -> pd.Series:
    return magpsf > 18.5


def test_a_table_per_filter_in_one_pass(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """Fink's sn_candidates and the README's classifier for all, then two tables: the young
    alerts, and the faint ones by a function of one's own; an alert in neither is rejected,
    and says why."""
    from examples.classifier import young_and_bright

    classifier = {"udf": "examples.classifier:young_and_bright",
                  "columns": ["candidate.magpsf", "candidate.jd", "candidate.jdstarthist"],
                  "returns": {"young_score": "double", "young": "boolean"}}
    sn = {"fink_filter": "fink_filters.ztf.livestream.filter_sn_candidates.filter.sn_candidates"}
    config = parse_config({"survey": "ztf", "schema": SCHEMA_2026, "filters": [
        sn, classifier, {"expression": "young", "table": "young"},
        {"udf": f"{__name__}:faint", "columns": ["candidate.magpsf"], "table": "kept"}],  # named as a batch's count
        "output": {"table": {"path": str(tmp_path / "warehouse"), "checkpoint": str(tmp_path / "chk"), "rejected": True}}},
        kafka_required=False)
    alerts = read_alerts(sample("ztf-2026"))
    frame = pd.DataFrame([alert["candidate"] for alert in alerts])
    scores = young_and_bright(frame.magpsf, frame.jd, frame.jdstarthist).assign(candid=frame.candid)
    young, faint_ones = set(scores.candid[scores.young]), set(frame.candid[frame.magpsf > 18.5])
    assert young and faint_ones and young & faint_ones and young | faint_ones != set(frame.candid)
    assert reprocess(spark, config, [str(sample("ztf-2026"))], [], "split") == len(young | faint_ones)
    for table, expected in (("young", young), ("kept", faint_ones)):
        rows = read_table(spark, str(tmp_path / "warehouse"), table).select("candid", "young_score").collect()
        assert sorted(row.candid for row in rows) == sorted(expected)
        by_candid = dict(zip(scores.candid, scores.young_score))
        assert [row.young_score for row in rows] == pytest.approx([by_candid[row.candid] for row in rows], rel=1e-6)
    rejected = read_table(spark, str(tmp_path / "warehouse"), "rejected").select("candid", "rejected_by").collect()
    assert sorted(row.candid for row in rejected) == sorted(set(frame.candid) - young - faint_ones)
    assert {row.rejected_by for row in rejected} == {"no table's filter (young, kept)"}
    audited = audit(config)
    assert audited.complete and audited.files is not None
    assert (audited.files.kept, audited.files.rejected) == (len(young) + len(faint_ones), len(rejected))
    # looked at as users do: explore and cone take the table by name
    out = io.StringIO()
    explore(["show", str(tmp_path / "warehouse"), "--table", "kept", "--format", "csv", "--limit", "100"], out=out)
    shown = sorted(row["objectId"] for row in csv.DictReader(io.StringIO(out.getvalue())))
    assert shown == sorted(alert["objectId"] for alert in alerts if alert["candid"] in faint_ones)
    first = alerts[[alert["candid"] for alert in alerts].index(min(faint_ones))]["candidate"]
    near = cone(str(tmp_path / "warehouse"), first["ra"], first["dec"], 1.0, table="kept")
    assert min(faint_ones) in near["candid"].to_pylist()
    with pytest.raises(ConfigError, match="holds no table 'alerts' \\(it holds kept, quarantine, rejected, young\\)"):
        explore(["show", str(tmp_path / "warehouse")], out=out)
