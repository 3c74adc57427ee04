"""Where decoded alerts go: the table (Iceberg, or plain Parquet), exactly once, the
quarantine, the rejected ids and the console.

The live job feeds all of them from one micro-batch, read from Kafka and decoded once
(`MicroBatchOutputs`; only the quarantined records, fetched back by position beside the
stream, and the rejected ids when kept, are read again): each output is a sink with the
same three methods (`has`, `write`, `write_nothing`): Iceberg appends, or merges for a
de-duplicated table (`fink_spark.iceberg`), or Spark's own file sink for Parquet
(`ParquetFileSink`). The console gets its counts and lines from metrics gathered during
the table's write.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StructType

from fink_spark import iceberg
from fink_spark.config import ICEBERG, ConsoleOutput, TableOutput, TriggerConfig
from fink_spark.decode import OBS_TIME, has_column
from fink_spark.display import batch_header, format_table
from fink_spark.errors import ConfigError
from fink_spark.filters import merge_copies
from fink_spark.metrics import PlanMetrics
from fink_spark.state import SINK_LOG, CheckpointFiles, sink_log_batches
from fink_spark.surveys import Survey

if TYPE_CHECKING:
    from fink_spark.quarantine import PendingQuarantine


def trigger_options(trigger: TriggerConfig) -> dict[str, Any]:
    if trigger.available_now:
        return {"availableNow": True}
    return {"processingTime": trigger.processing_time}


class Sink(Protocol):
    """One output written batch by batch from inside `foreachBatch`, exactly once."""

    def has(self, batch_id: int) -> bool: ...

    def write(self, batch_id: int, frame: DataFrame) -> None: ...

    def write_nothing(self, batch_id: int) -> None: ...

    def metrics(self) -> PlanMetrics:
        """How the metrics of a batch this sink writes are read back."""
        ...


@dataclass(frozen=True)
class Sinks:
    """A job's outputs (`table` is None when another query writes the table: a Parquet table's de-duplication)."""

    table: Sink | None
    quarantine: Sink
    rejected: Sink | None


def open_sinks(spark: SparkSession, output: TableOutput, survey: Survey, writer: str, columns: dict[str, StructType],
               changes: str | None = None, own_table: bool = True) -> Sinks:
    """The sinks of a job's outputs, made ready for frames of `columns` (by output name:
    alerts, quarantine, rejected). Iceberg tables are created, or evolved to the columns,
    now: before the query starts, a schema change is committed on its own."""
    missing = [column for column in output.partition_by if column in survey.class_partitions
               and column not in columns["alerts"].names]
    if missing:
        others = ", ".join(column for column in output.partition_by if column not in missing) or "topic"
        raise ConfigError(f"'output.table.partition_by' names {missing[0]}, which these alerts do not have (their "
                          f"writer schema predates it): partition by {others} instead, or give a reader schema that "
                          "has it ('schema').")
    if output.format == ICEBERG:
        tables = iceberg.Tables.of(output, survey.name)
        tables.open(spark)
        partitioning = {
            "alerts": iceberg.alert_partitioning(output.partition_by),
            "quarantine": ["topic", "days(ingest_time)"],
            "rejected": ["topic"],
        }
        sinks = {}
        for name, frame_columns in columns.items():
            if name == "alerts" and output.deduplicate_gap:
                sink = iceberg.IcebergMerges(spark, tables.name(name), writer, partitioning[name], survey.id_column,
                                             output.deduplicate_gap, merge_copies(survey))
            else:
                sink = iceberg.IcebergAppends(spark, tables.name(name), writer, partitioning[name])
            # statistics for the columns readers select alerts by: id, object, time
            metrics = tuple(column for column in (survey.id_column, survey.object_column, OBS_TIME, "ingest_time")
                            if has_column(frame_columns, column))
            properties = iceberg.table_properties(output.compression, metrics)
            sink.prepare(frame_columns, properties, changes if name == "alerts" else None)
            sinks[name] = sink
    else:
        paths = {"alerts": output.path, "quarantine": output.quarantine, "rejected": output.rejected_path}
        partition_by = {"alerts": output.partition_by, "quarantine": tuple(c for c in output.partition_by if c == "topic"),
                        "rejected": ("topic",)}
        sinks = {name: ParquetFileSink(spark, paths[name], partition_by[name], output.compression) for name in columns}  # type: ignore[misc]
    return Sinks(sinks["alerts"] if own_table else None, sinks["quarantine"], sinks.get("rejected"))


def table_query(frame: DataFrame, output: TableOutput, checkpoint: str, trigger: TriggerConfig, name: str) -> StreamingQuery:
    """Append a stream to a Parquet table with Spark's own streaming file sink: its
    checkpoint makes each record land exactly once."""
    writer = frame.writeStream.queryName(name).outputMode("append").option("checkpointLocation", checkpoint)
    writer = writer.trigger(**trigger_options(trigger)).format("parquet").option("compression", output.compression)
    if output.partition_by:
        writer = writer.partitionBy(*output.partition_by)
    return writer.start(output.path)


class ParquetFileSink:
    """A Parquet folder written batch by batch, exactly once, from inside `foreachBatch`.

    It is Spark's own streaming file sink (`FileStreamSink`), the one `writeStream.format
    ("parquet")` uses: each batch's files are listed in `<path>/_spark_metadata/<batch id>`
    when, and only when, they are all written, and a batch id already listed is skipped.
    A micro-batch replayed after a crash therefore adds nothing twice, and `spark.read`
    of the folder sees only committed files. The sink has no Python API: it is built
    through the session's JVM gateway.
    """

    def __init__(self, spark: SparkSession, path: str, partition_by: tuple[str, ...], compression: str) -> None:
        jvm = spark._jvm  # type: ignore[attr-defined]
        session = spark._jsparkSession  # type: ignore[attr-defined]
        sinks = jvm.org.apache.spark.sql.execution.streaming.sinks
        options = {"compression": compression}
        self.path = path
        self._sink = sinks.FileStreamSink(
            session,
            path,
            jvm.org.apache.spark.sql.execution.datasources.parquet.ParquetFileFormat(),
            jvm.PythonUtils.toSeq(list(partition_by)),
            jvm.PythonUtils.toScalaMap(options),
        )
        # The same log as the sink's, to record a batch with no files without a Spark job
        hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
        log_path = sinks.FileStreamSink.getMetadataLogPath(
            hadoop_path.getFileSystem(session.sessionState().newHadoopConf()), hadoop_path, session.sessionState().conf())
        self._sink_log = sinks.FileStreamSinkLog(sinks.FileStreamSinkLog.VERSION(), session, log_path.toString(),
                                                 jvm.scala.Option.apply(None))
        self._no_files = spark.sparkContext._gateway.new_array(sinks.SinkFileStatus, 0)  # type: ignore[union-attr]
        self._log = CheckpointFiles.at(path.rstrip("/") + "/" + SINK_LOG)

    def has(self, batch_id: int) -> bool:
        """Whether this batch is committed already (written before a crash or a stop)."""
        ids = sink_log_batches(self._log.names(""))
        return bool(ids) and max(ids) >= batch_id

    def write(self, batch_id: int, frame: DataFrame) -> None:
        """Append the batch unless it is committed already (it runs the frame's own plan)."""
        self._sink.addBatch(batch_id, frame._jdf)

    def metrics(self) -> PlanMetrics:
        return PlanMetrics()

    def write_nothing(self, batch_id: int) -> None:
        """Commit a batch that has nothing for this folder. Every batch id must be in the log
        (its compactions read them all, and `has` relies on it); adding the empty entry
        directly saves a Spark job over the batch's plan, 0.2 to 0.4 s a micro-batch."""
        if not self.has(batch_id):
            self._sink_log.add(batch_id, self._no_files)


def run_plan(frame: DataFrame) -> None:
    """Run the frame's own plan once, for its observed metrics only (nothing is kept)."""
    frame._jdf.queryExecution().toRdd().count()


@dataclass(frozen=True)
class MicroBatchOutputs:
    """Everything one micro-batch of records feeds (the body of `foreachBatch`).

    The batch is decoded (`decode`) and the table written first, in one pass over the
    records, which also counts the quarantined, filtered and kept records, notes where the
    quarantined ones are (topic, partition, offset) and why, and picks the console's lines
    (Spark's `observe`). The quarantine is then written only when that pass counted some,
    from those records alone, decoding nothing again: the live job's few are fetched back
    from Kafka and appended beside the stream (`later`, `fink_spark.quarantine`); otherwise
    the batch is read again (reprocessing's batches come decoded by their sources, and are
    decoded again whole). The rejected ids
    are written when the filters rejected some, from the batch decoded again. Each batch id
    is committed in every output either way so that their logs stay complete; after a
    crash, a replayed batch writes only what the crash left unwritten.
    """

    survey: Survey
    decode: Callable[[DataFrame], DataFrame] | None  # None: the batches come decoded
    kept: Callable[[DataFrame], DataFrame]
    quarantined: Callable[[DataFrame], DataFrame]
    table: Sink | None
    quarantine: Sink
    rejected: tuple[Sink, Callable[[DataFrame], DataFrame]] | None = None
    console: ConsoleOutput | None = None
    out: TextIO | None = None
    # Writes the few quarantined records of a minute's batches by their positions, beside the
    # stream (the live job's); None: the quarantine is written from the batch, read again.
    later: PendingQuarantine | None = None
    # records, quarantined, kept, filtered, bytes: over all batches; the last batch written
    # ("batch"), its records and bytes ("batch_records", "batch_bytes")
    totals: dict[str, int] = field(default_factory=dict)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        try:
            self._write_all(batch, batch_id)
        except Exception as error:
            stopped = QueryStoppedError.of(error)
            if stopped is None:
                raise
            raise stopped from None

    def _write_all(self, batch: DataFrame, batch_id: int) -> None:
        if self.later is not None:
            self.later.raise_failure()  # the query fails; its next start writes that quarantine
        decoded = batch.transform(self.decode) if self.decode is not None else batch
        counts = self._write_table(decoded, batch_id)
        for name in ("records", "quarantined", "kept", "filtered", "bytes"):
            self.totals[name] = self.totals.get(name, 0) + (counts or {}).get(name, 0)
        self.totals.update(batch=batch_id, batch_records=(counts or {}).get("records", 0),
                           batch_bytes=(counts or {}).get("bytes", 0))
        self._write_quarantine(batch, decoded, batch_id, counts)
        if self.rejected is not None:
            sink, rejections = self.rejected
            self._write_side(sink, rejections, lambda: decoded, batch_id, counts, "filtered")
        if self.console is not None:
            self._print(batch_id, counts)

    def _write_quarantine(self, batch: DataFrame, decoded: DataFrame, batch_id: int, counts: dict[str, Any] | None) -> None:
        """Hand a batch's few quarantined records to `later`, and a batch with none while
        `later` holds some (a sink's batches go in order); write any other batch's quarantine
        now, after all those handed before."""
        if self.later is not None and self.decode is not None and counts is not None:
            count, size = counts["quarantined"], counts["quarantined_bytes"]
            if (count and self.later.can_take(count, size)) or (not count and self.later.busy()):
                self.later.submit(self.quarantine, self.quarantined, batch_id, _reasons(counts), size)
                return
        if self.later is not None:
            self.later.write_now()
        self._write_side(self.quarantine, self.quarantined, lambda: self._quarantined_again(batch, decoded, counts),
                         batch_id, counts, "quarantined")

    def _quarantined_again(self, batch: DataFrame, decoded: DataFrame, counts: dict[str, Any] | None) -> DataFrame:
        """The records to write the quarantine from. Where the batches come raw: only the
        quarantined ones, joined from the batch read again with the reasons the table's pass
        found, so that nothing is decoded again. Where they come decoded (reprocessing): the
        whole batch, decoded again."""
        if counts is None or self.decode is None or not counts["quarantined"]:
            return decoded
        found = batch.sparkSession.createDataFrame([(*position, reason) for position, reason in _reasons(counts).items()],
                                                   "topic string, partition int, offset long, reject_reason string")
        return batch.join(F.broadcast(found), ["topic", "partition", "offset"])

    def _write_table(self, decoded: DataFrame, batch_id: int) -> dict[str, Any] | None:
        """Write the kept alerts; returns the batch's counts, the quarantined records'
        positions and reasons, and the console lines (None for a batch committed before a restart,
        whose records are not read again)."""
        plan = self.table.metrics() if self.table is not None else PlanMetrics()
        quarantined = F.col("reject_reason").isNotNull()
        size = F.coalesce(F.length("key"), F.lit(0)) + F.coalesce(F.length("value"), F.lit(0))
        records = plan.observe(
            decoded, "records",
            F.count(F.lit(1)).alias("records"),
            F.count_if(quarantined).alias("quarantined"),
            F.coalesce(F.sum(size), F.lit(0)).alias("bytes"),
            F.coalesce(F.sum(F.when(quarantined, size)), F.lit(0)).alias("quarantined_bytes"),
            F.collect_list(F.when(quarantined, F.struct("topic", "partition", "offset", "reject_reason"))).alias("positions"),
        )
        kept = records.transform(self.kept)
        kept_metrics = [F.count(F.lit(1)).alias("kept")]
        if self.console is not None:
            kept_metrics.append(_first_lines(kept, self.survey, self.console.rows).alias("lines"))
        kept = plan.observe(kept, "kept", *kept_metrics)
        if self.table is not None:
            if self.table.has(batch_id):
                return None
            self.table.write(batch_id, kept)
        else:  # the table is written by another query (a Parquet table's de-duplication): count here
            run_plan(kept)
        metrics = plan.collected(kept)
        counts = {**metrics["records"], **metrics["kept"]}
        counts["filtered"] = counts["records"] - counts["quarantined"] - counts["kept"]
        return counts

    @staticmethod
    def _write_side(sink: Sink, select: Callable[[DataFrame], DataFrame], records: Callable[[], DataFrame], batch_id: int,
                    counts: dict[str, Any] | None, count: str) -> None:
        """Write one side output; its records are read again (`records()`) only if it lacks the batch."""
        if counts is not None and counts[count] == 0:
            sink.write_nothing(batch_id)  # without reading the records again
        elif not sink.has(batch_id):
            sink.write(batch_id, records().transform(select))

    def _print(self, batch_id: int, counts: dict[str, Any] | None) -> None:
        if counts is None:
            lines = [f"--- batch {batch_id}: written before the restart, not shown again ---"]
        elif counts["records"] == 0:
            return
        else:
            labels = [column.label for column in self.survey.console_columns]
            rows = [self.survey.console_cells(line) for line in counts["lines"]]
            lines = [batch_header(batch_id, counts["kept"], counts["quarantined"], len(rows), rejected=counts["filtered"])]
            if rows:
                lines += format_table(labels, rows)
        stream = self.out or sys.stdout
        stream.write("\n".join(lines) + "\n")
        stream.flush()


class QueryStoppedError(Exception):
    """A micro-batch cut short by its query's stop (a re-size, Ctrl-C), in a few words.

    Spark tells such a stop from a failure by the Python error's text, with a regular
    expression that recurses once per character after "An error occurred while calling": on
    a whole Java stack trace, its stream thread dies of a StackOverflowError and prints a
    thousand lines. Told short, the stop is quiet."""

    INTERRUPTIONS = ("java.lang.InterruptedException", "java.io.InterruptedIOException",
                     "java.nio.channels.ClosedByInterruptException")

    @classmethod
    def of(cls, error: Exception) -> QueryStoppedError | None:
        """The stop an error tells of (an interrupted call, a job of the stopped query
        cancelled), or None for any other error."""
        text = str(error)
        interruption = next((name for name in cls.INTERRUPTIONS if name in text), None)
        if interruption is not None:
            return cls(f"py4j.protocol.Py4JJavaError: An error occurred while calling the micro-batch's writes: {interruption}")
        spark_error = "org.apache.spark.SparkException: "
        cancelled = next((line.lstrip(": ").removeprefix(spark_error) for line in text.splitlines()
                          if "cancelled job group" in line), None)
        if cancelled is not None:  # Spark reads the group (the query's run id) from the text
            return cls(spark_error + cancelled.strip()[:300])
        return None


def _reasons(counts: dict[str, Any]) -> dict[tuple[str, int, int], str]:
    """Where the table's pass found quarantined records, and why."""
    return {(row["topic"], row["partition"], row["offset"]): row["reject_reason"] for row in counts["positions"]}


def _first_lines(kept: DataFrame, survey: Survey, rows: int) -> Column:
    """The console lines of the first `rows` kept alerts in Kafka order, as an aggregate
    that `observe` computes while the table is written (a few short strings per alert)."""
    ordered = F.struct(
        F.col("topic").alias("~topic"), F.col("kafka_partition").alias("~partition"),
        F.col("kafka_offset").alias("~offset"), *console_values(survey, kept.schema),
    )
    return F.slice(F.array_sort(F.collect_list(ordered)), 1, rows)


def console_values(survey: Survey, schema: StructType) -> list[Column]:
    """The raw values of the survey's console columns, named by their labels (null where
    the table's schema lacks the column); `Survey.console_cells` formats them."""
    return [
        (F.col(column.column) if has_column(schema, column.column) else F.lit(None)).alias(column.label)
        for column in survey.console_columns
    ]
