"""The streaming job: Kafka -> decode -> filters -> Parquet, quarantine and console.

One Spark streaming query, `alerts`, reads each Kafka record once and decodes it once;
each micro-batch then feeds the Parquet table (exactly once), the quarantine (the records
that are not alerts) and the console. Its checkpoint is `<checkpoint>/alerts`. When a
record's key carries a writer schema the job has not met, the query stops; the job
learns the schema, adds it to the table's (`fink_spark.table_schema`), saves both
beside the checkpoint and the output, and starts again from the checkpoint, so that
nothing is skipped and nothing lands twice.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from fink_spark.config import JobConfig, KafkaConfig
from fink_spark.decode import UNKNOWN_SCHEMA, alerts, decode_records, quarantined
from fink_spark.discover import TRANSFER_PREFIX, topic_schema
from fink_spark.errors import ConfigError, KafkaAccessError
from fink_spark.filters import Filter, apply_filters, check_filters, deduplicate, first_rejection
from fink_spark.kafka_source import Message, earliest_offsets, key_at, newest, read_stream, subscribed_partitions
from fink_spark.schemas import (
    WRITER_SCHEMAS_FILE,
    WriterSchemas,
    key_kind,
    load_schema_text,
)
from fink_spark.sinks import MicroBatchOutputs, ParquetLog, parquet_query, trigger_options
from fink_spark.state import CheckpointFiles
from fink_spark.surveys import Survey
from fink_spark.table_schema import TABLE_SCHEMA_FILE, TableSchema, save_table_schema

log = logging.getLogger(__name__)

READER_SCHEMA_FILE = "reader_schema.avsc"  # the table's schema in checkpoints of fink-spark 0.x before schema evolution
_WHERE = re.compile(UNKNOWN_SCHEMA + r" \(topic (?P<topic>.+?), partition (?P<partition>\d+), offset (?P<offset>\d+)\)")


STATE = "fink_spark"


def job_files(config: JobConfig) -> CheckpointFiles:
    """The checkpoint folder: Spark's checkpoints, and fink_spark/ with the job's own state
    (the table's schema, the writer schemas met, skipped offsets)."""
    return CheckpointFiles.at(config.parquet.checkpoint)


def table_schema(config: JobConfig, state: CheckpointFiles, writers: WriterSchemas, newest_keys: list[bytes]) -> TableSchema:
    """The output table's schema: the one this checkpoint has built so far; for a new
    checkpoint, the configured schema, else the writer schema of the topics' newest
    message (the richest, when they differ), else the newest bundled one. Every writer
    schema known is then merged in (a no-op for those merged before)."""
    saved = state.read(f"{STATE}/{TABLE_SCHEMA_FILE}")
    if saved is not None:
        table = TableSchema.from_json(saved)
    else:
        start = state.read(f"{STATE}/{READER_SCHEMA_FILE}")  # checkpoints of fink-spark before schema evolution
        if config.schema:
            start = load_schema_text(config.schema)
        candidates = [writers.known[key] for key in newest_keys if key in writers.known]
        if start is None and candidates:
            # Topics written with different schemas: start from the richest.
            start = max(candidates, key=lambda schema: len(json.loads(schema)["fields"]))
        table = TableSchema.first(start or load_schema_text(config.survey.latest_schema), "start")
    for source, writer in [*writers.by_topic.items(), *(("before the start", w) for w in writers.known.values())]:
        changes = table.merge(writer, source)
        if changes:
            log.info("Table schema: %s (writer schema met before the start)", changes)
    return table


class BatchLog(StreamingQueryListener):
    """One line per micro-batch on the job's log (how many records, how fast), and the
    totals of each query over all its batches (start-up excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.totals: dict[str, list[float]] = {}  # query name -> [records, seconds of micro-batches]
        self.last_batch: dict[str, int] = {}

    def onQueryStarted(self, event) -> None:  # noqa: N802, ANN001 - Spark's names
        pass

    def onQueryProgress(self, event) -> None:  # noqa: N802, ANN001
        progress = event.progress
        self.last_batch[progress.name] = progress.batchId
        if progress.numInputRows:
            total = self.totals.setdefault(progress.name, [0, 0.0])
            total[0] += progress.numInputRows
            total[1] += progress.durationMs.get("triggerExecution", 0) / 1000
            log.info(
                "%s: batch %d, %d records, %.0f records/s",
                progress.name, progress.batchId, progress.numInputRows, progress.processedRowsPerSecond,
            )

    def onQueryIdle(self, event) -> None:  # noqa: N802, ANN001
        pass

    def onQueryTerminated(self, event) -> None:  # noqa: N802, ANN001
        pass

    def log_totals(self, queries: list[StreamingQuery], wait: float = 10.0) -> None:
        """Log each finished query's totals, once its last progress event has arrived
        (Spark delivers them asynchronously)."""
        deadline = time.monotonic() + wait
        for query in queries:
            last = (query.lastProgress or {}).get("batchId", -1)
            while self.last_batch.get(query.name, -1) < last and time.monotonic() < deadline:
                time.sleep(0.1)
        for name, (records, seconds) in self.totals.items():
            log.info("%s done: %d records in %.1f s of micro-batches (%.0f records/s)",
                     name, records, seconds, records / seconds if seconds else 0.0)


def kept_alerts(survey: Survey, filters: tuple[Filter, ...]) -> Callable[[DataFrame], DataFrame]:
    """Decoded records -> the alerts that pass the filters: what the sinks see."""
    return lambda decoded: decoded.transform(alerts(survey)).transform(apply_filters(filters))


def start_queries(spark: SparkSession, plan: StreamPlan, out: TextIO | None = None) -> list[StreamingQuery]:
    """Start the job's query with the writer schemas known now.

    One query, `alerts`, reads each record from Kafka once and decodes it once; each of its
    micro-batches feeds the Parquet table, the quarantine, the rejected ids and the console
    (`MicroBatchOutputs`). With de-duplication, a second query, `deduplicated`, writes the
    table: merging copies across batches needs Spark's streaming state, which only a
    query of its own keeps.
    """
    config, survey, parquet = plan.config, plan.config.survey, plan.config.parquet
    checkpoint = parquet.checkpoint.rstrip("/")

    def decoded(query: str) -> DataFrame:
        records = read_stream(spark, config.kafka, query, min_partitions=spark.sparkContext.defaultParallelism,
                              max_offsets=plan.max_offsets_per_trigger)
        return records.transform(decode_records(plan.writers, plan.table, survey))

    kept = kept_alerts(survey, config.filters)
    records = decoded("alerts")
    check_filters(config.filters, records.transform(alerts(survey)))
    queries = []
    table = None
    if parquet.deduplicate_gap:
        deduplicated = decoded("deduplicated").transform(kept).transform(deduplicate(survey, parquet.deduplicate_gap))
        queries.append(parquet_query(deduplicated, parquet.path, f"{checkpoint}/deduplicated", parquet.partition_by,
                                     config.trigger, "deduplicated", parquet.compression))
    else:
        table = ParquetLog(spark, parquet.path, parquet.partition_by, parquet.compression)
    rejected = None
    if parquet.rejected_path:
        rejected = (
            ParquetLog(spark, parquet.rejected_path, ("topic",), parquet.compression),
            lambda batch: batch.transform(alerts(survey)).transform(first_rejection(config.filters, survey)),
        )
    outputs = MicroBatchOutputs(
        survey=survey,
        kept=kept,
        quarantined=quarantined,
        table=table,
        quarantine=ParquetLog(spark, parquet.quarantine, tuple(c for c in parquet.partition_by if c == "topic"),
                              parquet.compression),
        rejected=rejected,
        console=config.console if config.console.enabled else None,
        out=out,
    )
    table_frame = deduplicated if parquet.deduplicate_gap else records.transform(kept)
    save_table_schema(plan.table, table_frame.schema, plan.state, parquet.path)
    writer = records.writeStream.queryName("alerts").foreachBatch(outputs)
    writer = writer.option("checkpointLocation", f"{checkpoint}/alerts").trigger(**trigger_options(config.trigger))
    return [writer.start(), *queries]


def _await(spark: SparkSession, queries: list[StreamingQuery]) -> None:
    """Wait until every query has ended (available now) or one fails."""
    try:
        while any(query.isActive for query in queries):
            spark.streams.awaitAnyTermination()
            spark.streams.resetTerminated()
            for query in queries:
                if not query.isActive and query.exception() is not None:
                    raise query.exception()  # type: ignore[misc]
    except BaseException:
        for query in queries:
            if query.isActive:
                query.stop()
        spark.streams.resetTerminated()
        raise


@dataclass(frozen=True)
class StreamPlan:
    """What the job knows before Spark starts: the checked config, the schemas, its state."""

    config: JobConfig
    writers: WriterSchemas
    table: TableSchema
    state: CheckpointFiles
    max_offsets_per_trigger: int | None = None


def prepare_stream(config: JobConfig) -> StreamPlan:
    """Check that the topics can be read (failing fast on credentials) and choose the schemas."""
    if config.kafka is None:
        raise ConfigError("Missing required key 'kafka'.")
    partitions = subscribed_partitions(config.kafka)
    state = job_files(config)
    # Where reading begins: after the last committed batch, or at the configured start.
    starts = committed_offsets(state)
    if not starts and config.kafka.starting_offsets == "earliest":
        starts = earliest_offsets(config.kafka, partitions)
    newest_messages = newest(config.kafka, partitions, starts=starts)
    newest_keys = [message.key for message in newest_messages if message.key is not None]
    writers = WriterSchemas(config.survey)
    saved = state.read(f"{STATE}/{WRITER_SCHEMAS_FILE}")
    if saved is not None:
        writers.add_json(saved)
    bundled = writers.bundled_versions()
    for key in newest_keys:
        if key_kind(key) == "json" or key in bundled:
            writers.learn(key)
    for topic in partitions:
        if topic.startswith(TRANSFER_PREFIX):
            writers.by_topic[topic] = topic_schema(config.kafka, topic, config.survey)
    table = table_schema(config, state, writers, newest_keys)
    state.write(f"{STATE}/{WRITER_SCHEMAS_FILE}", writers.to_json())
    if config.kafka.on_data_loss == "skip":
        record_skipped_offsets(config, partitions, state)
    return StreamPlan(config, writers, table, state, batch_size(config.kafka, newest_messages))


def batch_size(kafka: KafkaConfig, newest_messages: list[Message]) -> int | None:
    """The most records a micro-batch reads: `kafka.max_bytes_per_trigger` over the size of
    the topics' newest messages, within `kafka.max_offsets_per_trigger`. A backlog is so
    drained in batches of bounded size whatever its length (ZTF alerts weigh about 50 kB,
    LSST alerts about 230 kB)."""
    sizes = [message.size for message in newest_messages]
    by_bytes = max(1, kafka.max_bytes_per_trigger * len(sizes) // sum(sizes)) if sizes and sum(sizes) else None
    limits = [limit for limit in (by_bytes, kafka.max_offsets_per_trigger) if limit]
    if by_bytes:
        log.info("Micro-batches of at most %d records (%s MB at %.0f kB per message)", min(limits),
                 kafka.max_bytes_per_trigger // 1_000_000, sum(sizes) / len(sizes) / 1000)
    return min(limits) if limits else None


def committed_offsets(state: CheckpointFiles, query: str = "alerts") -> dict[str, dict[int, int]]:
    """Where a query stopped: the end offsets of its last committed batch."""
    commits = [int(name) for name in state.names(f"{query}/commits") if name.isdigit()]
    text = state.read(f"{query}/offsets/{max(commits)}") if commits else None
    if text is None:
        return {}
    lines = text.splitlines()
    offsets: dict[str, dict[int, int]] = {}
    for line in lines[2:]:
        for topic, parts in json.loads(line).items():
            offsets.setdefault(topic, {}).update({int(p): int(o) for p, o in parts.items()})
    return offsets


def record_skipped_offsets(config: JobConfig, partitions: dict[str, int], state: CheckpointFiles) -> None:
    """With kafka.on_data_loss: skip, write down which offsets retention deleted before the job read them."""
    done = committed_offsets(state)
    earliest = earliest_offsets(config.kafka, partitions)
    gaps = [
        {"topic": topic, "partition": partition, "from_offset": done[topic][partition], "to_offset": first}
        for topic, firsts in earliest.items()
        for partition, first in firsts.items()
        if partition in done.get(topic, {}) and done[topic][partition] < first
    ]
    if gaps:
        path = f"{STATE}/skipped_offsets.json"
        previous = json.loads(state.read(path) or "[]")
        state.write(path, json.dumps(previous + [{"recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                   "gaps": gaps}], indent=1))
        for gap in gaps:
            log.warning("Skipping %s[%d] offsets %d to %d: deleted from the broker before the job read them (see %s)",
                        gap["topic"], gap["partition"], gap["from_offset"], gap["to_offset"] - 1, path)


class _PlannedStops(logging.Filter):
    """Drops py4j's traceback of a micro-batch stopped at a new writer schema: the job logs one line for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or UNKNOWN_SCHEMA not in str(error)


@contextmanager
def quiet_planned_stops() -> Iterator[None]:
    """While the job runs, stops at a new writer schema print no traceback."""
    planned_stops = _PlannedStops()
    logging.getLogger("py4j.clientserver").addFilter(planned_stops)
    try:
        yield
    finally:
        logging.getLogger("py4j.clientserver").removeFilter(planned_stops)


def learn_schema_at(failures: list[str], kafka: KafkaConfig | None, writers: WriterSchemas, table: TableSchema) -> bool:
    """If a query stopped at a writer schema it had not met: learn the schema, add it to the
    table's, log one line and return True; False for any other failure."""
    where = next((match for match in map(_WHERE.search, failures) if match), None)
    if where is None or kafka is None:
        return False
    key = key_at(kafka, where["topic"], int(where["partition"]), int(where["offset"]))
    if key is None or not writers.learn(key):
        return False
    source = f"{where['topic']}[{where['partition']}] offset {where['offset']}"
    changes = table.merge(writers.known[key], source) if key in writers.known else None
    log.info("New writer schema at %s: %s; going on from the checkpoint", source,
             changes or writers.rejected.get(key) or "the table's schema holds it already")
    return True


def run_stream(spark: SparkSession, plan: StreamPlan, out: TextIO | None = None) -> None:
    """Run the job until it is stopped (processing-time trigger) or has read everything (available now)."""
    progress = BatchLog()
    spark.streams.addListener(progress)
    try:
        with quiet_planned_stops():
            _run_until_done(spark, plan, out, progress)
    finally:
        spark.streams.removeListener(progress)


def _explained(error: StreamingQueryException, config: JobConfig) -> Exception:
    """Known failures as a clear message; anything else as it is."""
    text = str(error)
    if "failOnDataLoss" in text:
        return KafkaAccessError(
            "Offsets this checkpoint has not read yet are gone from the broker (retention deleted them, or the "
            "topic was recreated). Nothing was written for them. To go on from the oldest offsets still there, set "
            "'kafka.on_data_loss: skip' (the skipped offsets are recorded in the checkpoint's "
            "fink_spark/skipped_offsets.json), or start a new checkpoint."
        )
    if "TimeoutException" in text and config.kafka is not None:
        return KafkaAccessError(
            f"Lost the Kafka brokers {config.kafka.servers} for longer than the job waits. Nothing read was lost: "
            "run the job again when they are back, and it resumes from its checkpoint."
        )
    return error


def _run_until_done(spark: SparkSession, plan: StreamPlan, out: TextIO | None, progress: BatchLog) -> None:
    config, writers, state = plan.config, plan.writers, plan.state
    while True:
        queries = start_queries(spark, plan, out)
        try:
            _await(spark, queries)
            progress.log_totals(queries)
            return
        except StreamingQueryException as error:
            # The first query to fail may be one that another's failure interrupted: look at all of them.
            failures = [str(error)] + [str(query.exception()) for query in queries if query.exception() is not None]
            if not learn_schema_at(failures, config.kafka, writers, plan.table):
                raise _explained(error, config) from None
            for query in queries:  # a query stopped while writing its log leaves a temporary file there
                state.remove_temporary_files(f"{query.name}/offsets")
                state.remove_temporary_files(f"{query.name}/commits")
            state.write(f"{STATE}/{WRITER_SCHEMAS_FILE}", writers.to_json())
