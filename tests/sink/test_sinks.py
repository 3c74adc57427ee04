"""One micro-batch feeds the table, the quarantine, the rejected ids and the console, each
batch id once per folder, also when a crash makes Spark replay it (no broker: the batch is
an in-memory DataFrame of real alerts in Kafka's record shape)."""

from __future__ import annotations

import io
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import kafka_messages, kafka_records, sample
from py4j.protocol import Py4JJavaError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fink_spark.config.job import ConsoleOutput
from fink_spark.run.pipeline import kept_alerts
from fink_spark.schema.table import TableSchema
from fink_spark.schema.writer import WriterSchemas
from fink_spark.sink.outputs import MicroBatchOutputs, QueryStoppedError
from fink_spark.sink.parquet import ParquetFileSink
from fink_spark.sink.quarantine import PendingQuarantine
from fink_spark.state import PENDING_QUARANTINE, CheckpointFiles
from fink_spark.surveys import ZTF
from fink_spark.testing.publisher import read_saved_alerts
from fink_spark.transform.decode import decode_records, quarantined
from fink_spark.transform.filters import first_rejection, parse_filters

TOPIC = "fink_sn_candidates_ztf"
POISON = (b"\x00\x01not avro", b"")


def kafka_batch(spark: SparkSession) -> tuple[DataFrame, WriterSchemas, str, list[dict]]:
    """The 31 ZTF alerts of 2026 as Fink publishes them, then 2 poison messages."""
    saved = next(read_saved_alerts([sample("ztf-2026")]))
    writers = WriterSchemas(ZTF)
    writers.learn(saved.schema_text.encode())
    return kafka_records(spark, "ztf-2026", TOPIC, POISON), writers, saved.schema_text, saved.records


def outputs(spark: SparkSession, root: Path, out: io.StringIO, decode: Callable[[DataFrame], DataFrame],
            rejected: bool = True) -> MicroBatchOutputs:
    filters = parse_filters(["candidate.magpsf < 18.5"], ZTF)
    return MicroBatchOutputs(
        survey=ZTF,
        decode=decode,
        kept=kept_alerts(ZTF, filters),
        quarantined=quarantined,
        tables={"alerts": ParquetFileSink(spark, str(root / "alerts"), ("topic",), "zstd")},
        quarantine=ParquetFileSink(spark, str(root / "quarantine"), ("topic",), "zstd"),
        rejected=(ParquetFileSink(spark, str(root / "rejected"), ("topic",), "zstd"),
                  lambda batch: batch.transform(kept_alerts(ZTF, ())).transform(first_rejection(filters, ZTF)))
        if rejected else None,
        console=ConsoleOutput(enabled=True, rows=3),
        out=out,
    )


def test_a_batch_and_its_replays_land_once_in_every_folder(spark: SparkSession, tmp_path: Path) -> None:
    records, writers, schema, alerts = kafka_batch(spark)
    decode = decode_records(writers, TableSchema.first(schema, "test"), ZTF)
    out = io.StringIO()
    write = outputs(spark, tmp_path, out, decode)
    passing = sorted(a["candid"] for a in alerts if a["candidate"]["magpsf"] < 18.5)
    assert 0 < len(passing) < len(alerts)

    started = datetime.now() - timedelta(seconds=1)  # ingest_time is to the millisecond
    write(records, 0)
    written = datetime.now()
    # The job restarts and Spark replays the batch (a crash before the query's own commit).
    outputs(spark, tmp_path, out, decode)(records, 0)
    # A crash after the table's commit, before the quarantine's: its files may be written but
    # are not listed in its log. The replay writes the quarantine again, and only it.
    for name in ("0", ".0.crc"):  # as if the commit had never happened
        (tmp_path / "quarantine" / "_spark_metadata" / name).unlink()
    outputs(spark, tmp_path, out, decode)(records, 0)

    table = spark.read.parquet(str(tmp_path / "alerts")).collect()
    assert sorted(row.candid for row in table) == passing
    # When each alert was written: a time of the first write, not a constant of the plan
    assert all(started <= row.ingest_time <= written for row in table)
    reasons = [row.reject_reason for row in spark.read.parquet(str(tmp_path / "quarantine")).orderBy("kafka_offset").collect()]
    assert reasons == ["value does not decode with the writer schema its key names", "empty value"]
    rejected = spark.read.parquet(str(tmp_path / "rejected")).collect()
    assert sorted(row.candid for row in rejected) == sorted(set(a["candid"] for a in alerts) - set(passing))
    assert {row.rejected_by for row in rejected} == {"filters[0] (candidate.magpsf < 18.5)"}

    printed = out.getvalue().splitlines()
    filtered = len(alerts) - len(passing)
    assert printed[0] == f"--- batch 0: {len(passing)} alerts, showing 3, {filtered} rejected by filters, 2 quarantined ---"
    assert [cell.strip() for cell in printed[1].split(" | ")] == [column.label for column in ZTF.console_columns]
    first_kept = [a for a in alerts if a["candid"] in passing][:3]  # Kafka order
    assert [line.split(" | ")[2].strip() for line in printed[2:5]] == [a["objectId"] for a in first_kept]
    assert printed[5:] == ["--- batch 0: written before the restart, not shown again ---"] * 2

    # The session's Parquet settings reach Spark's file sink (which passes on only the codec
    # from its own options): no column is dictionary-encoded.
    for file in (tmp_path / "alerts").rglob("*.parquet"):
        metadata = pq.ParquetFile(file).metadata
        encodings = {encoding for group in range(metadata.num_row_groups) for column in range(metadata.num_columns)
                     for encoding in metadata.row_group(group).column(column).encodings}
        assert encodings and not encodings & {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}, file


def test_a_batch_without_poison_still_commits_its_id_in_the_quarantine(spark: SparkSession, tmp_path: Path) -> None:
    """Spark's sink log needs every batch id: a batch with nothing for the quarantine is
    committed there with no files (without a Spark job), through the log's compaction
    (every tenth batch by default; every second here), and a later batch with poison lands as usual."""
    records, writers, schema, _ = kafka_batch(spark)
    records = records.where("offset < 2 OR offset >= 31")  # two alerts (a quicker write) and the poison
    clean = records.where("length(value) > 100")
    spark.conf.set("spark.sql.streaming.fileSink.log.compactInterval", "2")
    try:
        write = outputs(spark, tmp_path, io.StringIO(), decode_records(writers, TableSchema.first(schema, "test"), ZTF),
                        rejected=False)
    finally:
        spark.conf.unset("spark.sql.streaming.fileSink.log.compactInterval")
    for batch_id in range(3):
        write(clean, batch_id)
    write(clean, 2)  # replayed after a restart: nothing changes
    log = tmp_path / "quarantine" / "_spark_metadata"
    names = ["0", "1.compact", "2"]
    assert sorted(p.name for p in log.glob("[0-9]*")) == sorted(names)
    assert [(log / name).read_text().splitlines() for name in names] == [["v1"]] * 3  # no file listed
    assert not list((tmp_path / "quarantine").rglob("*.parquet"))

    write(records, 3)
    quarantine = spark.read.parquet(str(tmp_path / "quarantine")).collect()
    assert sorted(row.kafka_offset for row in quarantine) == [31, 32]  # the two poison messages
    assert len((log / "3.compact").read_text().splitlines()) == 2  # "v1" and the one file of every batch so far


def test_an_alert_whose_ids_disagree_is_quarantined_with_that_reason(spark: SparkSession) -> None:
    saved = next(read_saved_alerts([sample("ztf-2026")]))
    record = saved.records[0]
    disagreeing = {**record, "candidate": {**record["candidate"], "candid": record["candid"] + 1}}
    writers = WriterSchemas(ZTF)
    writers.learn(saved.schema_text.encode())
    decoded = kafka_messages(spark, saved.schema_text, [record, disagreeing], TOPIC).transform(
        decode_records(writers, TableSchema.first(saved.schema_text, "test"), ZTF))
    reasons = [row.reject_reason for row in decoded.orderBy("offset").select("reject_reason").collect()]
    assert reasons == [None, "candidate.candid differs from candid"]


def test_the_live_job_keeps_its_few_quarantined_records_in_the_checkpoint_until_appended_and_loses_none(
        spark: SparkSession, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The table's pass notes where the poison is; the records are fetched back by position
    and appended by the micro-batch that finds them due (at once here; the job gathers a
    minute's batches). Their positions wait in the checkpoint until then: a crash in between
    loses none, and a replay adds none."""
    first, writers, schema, alerts = kafka_batch(spark)
    second = first.withColumn("offset", F.col("offset") + 100)  # the next batch: the same messages again
    decode = decode_records(writers, TableSchema.first(schema, "test"), ZTF)
    state = CheckpointFiles.at(str(tmp_path / "checkpoint"))
    broker = pa.concat_tables([first.toArrow(), second.toArrow()])  # what Kafka gives back, by position

    def fetch(positions: list[tuple[str, int, int]], leave_out: tuple[int, ...] = ()) -> pa.Table:
        offsets = [offset for _, _, offset in positions if offset not in leave_out]
        return broker.filter(pc.is_in(broker.column("offset"), pa.array(offsets, pa.int64())))

    def quarantine() -> list[tuple[int, str, bytes | None]]:
        rows = spark.read.parquet(str(tmp_path / "quarantine")).orderBy("kafka_offset").collect()
        return [(row.kafka_offset, row.reject_reason, row.value if row.value is None else bytes(row.value)) for row in rows]

    def start(pending_quarantine: PendingQuarantine) -> MicroBatchOutputs:  # as a query's start does
        job = replace(outputs(spark, tmp_path, io.StringIO(), decode, rejected=False), pending_quarantine=pending_quarantine)
        pending_quarantine.open(job.quarantine, quarantined)
        return job

    # The job dies after batch 0, its quarantine gathered, not appended.
    start(PendingQuarantine(spark, state, fetch))(first, 0)
    pending = json.loads((tmp_path / "checkpoint" / PENDING_QUARANTINE / "0.json").read_text())
    undecodable, empty = "value does not decode with the writer schema its key names", "empty value"
    assert pending == {"batch": 0, "records": [[TOPIC, 0, 31, undecodable], [TOPIC, 0, 32, empty]]}
    assert not list((tmp_path / "quarantine").rglob("*.parquet"))

    # The next start writes it before its query starts; Spark then replays batch 0 (not committed).
    restarted = PendingQuarantine(spark, state, fetch, gathered_for=0)
    job = start(restarted)
    assert quarantine() == [(31, undecodable, POISON[0]), (32, empty, b"")]
    assert not list((tmp_path / "checkpoint" / PENDING_QUARANTINE).iterdir())
    job(first, 0)
    # Batch 1: a message is gone from the broker before its quarantine is written (after a long stop).
    restarted.fetch = lambda positions: fetch(positions, leave_out=(132,))
    job(second, 1)
    gone = "; the record was gone from the broker when the quarantine was written"
    assert quarantine() == [(31, undecodable, POISON[0]), (32, empty, b""), (131, undecodable, POISON[0]), (132, empty + gone, None)]
    assert any(r.getMessage().startswith("1 quarantined records were gone from the broker") for r in caplog.records)
    kept = sum(alert["candidate"]["magpsf"] < 18.5 for alert in alerts)
    assert spark.read.parquet(str(tmp_path / "alerts")).count() == 2 * kept

    # An append that fails fails its micro-batch, and its positions stay for the next start.
    with pytest.raises(ZeroDivisionError):
        start(PendingQuarantine(spark, state, lambda positions: 1 / 0, gathered_for=0))(
            first.withColumn("offset", F.col("offset") + 200), 2)
    assert (tmp_path / "checkpoint" / PENDING_QUARANTINE / "2.json").exists()


def test_the_live_job_appends_a_minutes_quarantine_at_once_as_its_newest_batch_and_a_crash_writes_it_once(
        spark: SparkSession, tmp_path: Path) -> None:
    """Batches' quarantined records are gathered (their positions in the checkpoint) and
    appended in one commit by the micro-batch that finds them due, as the newest batch, the
    others committed empty before it (a Parquet folder's log lists every batch). After a
    crash inside that append, or after its commit, the next start writes them once."""
    first, writers, schema, alerts = kafka_batch(spark)
    decode = decode_records(writers, TableSchema.first(schema, "test"), ZTF)
    state = CheckpointFiles.at(str(tmp_path / "checkpoint"))
    batches = {batch_id: first.withColumn("offset", F.col("offset") + 100 * batch_id) for batch_id in range(8)}
    batches[1] = batches[1].where(F.length("value") > 100)  # no poison
    broker = pa.concat_tables([batch.toArrow() for batch in batches.values()])
    fetched: list[list[int]] = []
    quarantine = ParquetFileSink(spark, str(tmp_path / "quarantine"), ("topic",), "zstd")

    def fetch(positions: list[tuple[str, int, int]]) -> pa.Table:
        fetched.append(sorted(offset for _, _, offset in positions))
        return broker.filter(pc.is_in(broker.column("offset"), pa.array([offset for _, _, offset in positions], pa.int64())))

    def start(pending_quarantine: PendingQuarantine, sink: ParquetFileSink = quarantine) -> MicroBatchOutputs:
        job = replace(outputs(spark, tmp_path, io.StringIO(), decode, rejected=False), quarantine=sink,
                      pending_quarantine=pending_quarantine)
        pending_quarantine.open(sink, quarantined)
        return job

    def quarantined_offsets() -> list[int]:
        return sorted(row.kafka_offset for row in spark.read.parquet(str(tmp_path / "quarantine")).collect())

    def logged_files() -> dict[str, int]:  # batch id: files listed
        log = tmp_path / "quarantine" / "_spark_metadata"
        return {entry.name: len(entry.read_text().splitlines()) - 1 for entry in log.iterdir() if entry.name.isdigit()}

    def pending() -> list[str]:
        return sorted(path.name for path in (tmp_path / "checkpoint" / PENDING_QUARANTINE).iterdir())

    gathering = PendingQuarantine(spark, state, fetch)
    job = start(gathering)
    for batch_id in (0, 1, 2):
        job(batches[batch_id], batch_id)
    assert gathering.busy() and pending() == ["0.json", "1.json", "2.json"]
    assert not list((tmp_path / "quarantine").rglob("*.parquet")) and logged_files() == {}  # nothing appended yet
    gathering.write_now()  # as at the end of a run
    assert quarantined_offsets() == [31, 32, 231, 232] and pending() == []
    assert fetched == [[31, 32, 231, 232]]  # one fetch for the append
    assert logged_files() == {"0": 0, "1": 0, "2": 1}  # one file, committed as batch 2

    # The first batch to end once the gathered ones have waited long enough appends them all.
    waiting = PendingQuarantine(spark, state, fetch, gathered_for=0.5)
    job = start(waiting)
    job(batches[3], 3)
    time.sleep(0.6)
    job(batches[4], 4)
    assert not waiting.busy() and pending() == [] and quarantined_offsets()[-4:] == [331, 332, 431, 432]
    assert logged_files() == {"0": 0, "1": 0, "2": 1, "3": 0, "4": 1}

    @dataclass
    class Killed:  # the job dies in the append, before its commit or after it (before the checkpoint knows)
        after_commit: bool

        def __getattr__(self, name: str) -> object:
            return getattr(quarantine, name)

        def write(self, batch_id: int, frame: DataFrame) -> None:
            if self.after_commit:
                quarantine.write(batch_id, frame)
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        start(PendingQuarantine(spark, state, fetch, gathered_for=0), Killed(after_commit=True))(batches[5], 5)  # type: ignore[arg-type]
    assert pending() == ["5.json"]
    start(PendingQuarantine(spark, state, fetch))
    assert quarantined_offsets()[-4:] == [431, 432, 531, 532] and len(quarantined_offsets()) == 10  # each once
    assert logged_files()["5"] == 1 and pending() == []

    # A crash inside an append, after the batches before the newest were committed empty
    failing = PendingQuarantine(spark, state, fetch)
    job = start(failing, Killed(after_commit=False))  # type: ignore[arg-type]
    for batch_id in (6, 7):
        job(batches[batch_id], batch_id)
    with pytest.raises(RuntimeError, match="killed"):
        failing.write_now()
    assert logged_files()["6"] == 0 and "7" not in logged_files()  # batch 6 reads as written already
    start(PendingQuarantine(spark, state, fetch))
    assert quarantined_offsets()[-4:] == [631, 632, 731, 732] and len(quarantined_offsets()) == 14
    assert pending() == []


class _Py4JTextError(Exception):
    """An error whose traceback ends as py4j's does ("py4j.protocol.Py4JJavaError: ..."), with a given text."""


_Py4JTextError.__module__, _Py4JTextError.__qualname__ = "py4j.protocol", "Py4JJavaError"


def test_a_micro_batch_cut_short_by_its_query_stop_is_told_in_a_few_words_that_spark_reads(spark: SparkSession) -> None:
    """Spark's own check (StreamExecution.isInterruptionException) of the text py4j hands it
    when foreachBatch raises: told whole, an interrupted call's Java stack trace makes it
    overflow its stack (the stream thread then prints a thousand lines at every re-size);
    told short, it reads a stop, for an interrupted call and for a job of the query cancelled alike."""
    jvm = spark._jvm
    context = spark.sparkContext

    def spark_reads_a_stop(error: Exception) -> bool:
        try:
            raise error
        except Exception:
            told = traceback.format_exc()  # what py4j's callback server tells the JVM
        return jvm.org.apache.spark.sql.execution.streaming.runtime.StreamExecution.isInterruptionException(
            jvm.py4j.Py4JException(told), context._jsc.sc())

    jvm.java.lang.Thread.currentThread().interrupt()  # as a stop interrupts the stream's thread
    with pytest.raises(Py4JJavaError) as interrupted:
        jvm.java.lang.Thread.sleep(1000)
    # A micro-batch's calls run some 150 frames deeper (Spark's execution, py4j's callback)
    deeper = "".join(f"\tat org.apache.spark.sql.execution.streaming.runtime.MicroBatchExecution.runBatch{n}"
                     "(MicroBatchExecution.scala:900)\n" for n in range(150))
    whole = _Py4JTextError(str(interrupted.value) + deeper)
    assert "java.lang.InterruptedException" in str(whole)
    with pytest.raises(Py4JJavaError, match="StackOverflowError"):
        spark_reads_a_stop(whole)
    told = QueryStoppedError.of(whole)
    assert str(told) == ("py4j.protocol.Py4JJavaError: An error occurred while calling the micro-batch's writes: "
                         "java.lang.InterruptedException")
    assert spark_reads_a_stop(told)

    cancelled = _Py4JTextError("An error occurred while calling o88.append.\n: org.apache.spark.SparkException: Job 12 cancelled "
                          "part of cancelled job group 757cb7bf-run\n" + deeper)
    context.setLocalProperty("spark.jobGroup.id", "757cb7bf-run")  # a query's jobs run in its run id's group
    try:
        told = QueryStoppedError.of(cancelled)
        assert str(told) == "org.apache.spark.SparkException: Job 12 cancelled part of cancelled job group 757cb7bf-run"
        assert spark_reads_a_stop(told)
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
    failed = _Py4JTextError("An error occurred while calling o88.append.\n: java.io.IOException: disk full")
    assert QueryStoppedError.of(failed) is None
