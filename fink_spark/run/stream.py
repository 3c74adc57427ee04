"""The streaming job: the pipeline (`fink_spark.run.pipeline.start_pipeline`) on Kafka topics.

Before Spark starts, the job looks at the topics (`prepare_stream`): their partitions, where
reading starts, the writer schemas of their newest messages, the micro-batches' size. Its
query, `alerts`, has its checkpoint in `<checkpoint>/alerts`. When a
record's key carries a writer schema the job has not met, the query stops; the job
learns the schema, adds it to the table's (`fink_spark.schema.table`), saves both
beside the checkpoint and the output, and starts again from the checkpoint, so that
nothing is skipped and nothing lands twice.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TextIO

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from fink_spark.config.job import PARQUET, JobConfig, KafkaConfig
from fink_spark.errors import ConfigError, KafkaAccessError
from fink_spark.kafka.client import (
    TRANSFER_PREFIX,
    Message,
    earliest_offsets,
    newest,
    offsets_at_time,
    records_at,
    subscribed_partitions,
    topic_schema,
)
from fink_spark.kafka.positions import spark_offsets
from fink_spark.kafka.source import offsets_json, read_stream
from fink_spark.run.pipeline import learn_schema_at, quiet_planned_stops, start_pipeline, starting_table_schema
from fink_spark.run.progress import BatchProgress
from fink_spark.schema.table import TableSchema
from fink_spark.schema.writer import WriterSchemas, key_kind
from fink_spark.sink.outputs import BatchCounts
from fink_spark.sink.quarantine import FETCHED_BYTES_AT_MOST, PendingQuarantine
from fink_spark.state import SKIPPED_OFFSETS, STREAM_QUERY, WRITER_SCHEMAS, CheckpointFiles
from fink_spark.transform.decode import decode_records

log = logging.getLogger(__name__)

def checkpoint_files(config: JobConfig) -> CheckpointFiles:
    """The checkpoint folder: Spark's checkpoints, and fink_spark/ with the job's own state
    (the table's schema, the writer schemas met, skipped offsets)."""
    return CheckpointFiles.at(config.output.checkpoint)


def start_queries(spark: SparkSession, plan: StreamPlan, pending_quarantine: PendingQuarantine,
                  out: TextIO | None = None) -> list[StreamingQuery]:
    """Start the job's pipeline on the Kafka topics, with the writer schemas known now."""
    config = plan.config

    def read(query: str) -> DataFrame:
        return read_stream(spark, config.kafka, query, min_partitions=spark.sparkContext.defaultParallelism,
                           max_offsets=plan.max_offsets_per_trigger, starting_offsets=plan.starting_offsets)

    decode = decode_records(plan.writers, plan.table, config.survey)
    return start_pipeline(spark, read, decode, config, plan.writers, plan.table, plan.totals, STREAM_QUERY, out, pending_quarantine,
                          ledger=True)


@dataclass
class StreamPlan:
    """What the job knows before Spark starts: the checked config, the schemas, its state,
    where a new checkpoint starts. `writers` and `table` grow while the job runs, as it
    meets new writer schemas; `totals` counts the records, quarantined and kept alerts."""

    config: JobConfig
    writers: WriterSchemas
    table: TableSchema
    state: CheckpointFiles
    max_offsets_per_trigger: int | None = None
    starting_offsets: str | None = None
    first_offsets: dict[str, dict[int, int]] = field(default_factory=dict)  # where a new checkpoint starts
    totals: BatchCounts = field(default_factory=BatchCounts)
    partitions: int = 1  # read by the job, over all its topics
    # (batch, new bound, its records, its bytes): a re-size a written batch called for, kept
    # until that batch is committed (the next batch may be written before it is)
    resize_after: tuple[int, int, int, int] | None = None

    def limit_reached(self) -> bool:
        """Whether `trigger.limit` alerts are kept."""
        limit = self.config.trigger.limit
        return limit is not None and self.totals.kept >= limit

    def resized(self) -> int | None:
        """A new bound on a micro-batch's records when the last batch's messages weighed much
        more than the bound was made for (over twice `kafka.max_bytes_per_trigger`), or much
        less while it was full (under a quarter): Spark's Kafka source bounds a batch by a
        record count, fixed when its query starts, so the job restarts its queries with the
        new count (after a committed batch: nothing is read twice). A batch Spark had planned
        before that restart is read as planned, with the old count."""
        records, size = self.totals.batch_records, self.totals.batch_bytes
        if not records or not size or self.config.kafka is None:
            return None
        bound, most = self.max_offsets_per_trigger, self.config.kafka.max_bytes_per_trigger
        # Spark shares a batch's bound among the partitions, rounding each share down (or up
        # to 1): a full batch reads up to one message a partition fewer, or more.
        if bound is not None and records >= bound + self.partitions:  # planned before the last restart
            return None
        full = bound is not None and records > bound - self.partitions
        if not (size > 2 * most or (full and size * 4 < most)):
            return None
        count = batch_bound(self.config.kafka, self.config.trigger.limit, records, size)
        return count if count != bound else None

    def done(self, finished: dict[str, int]) -> bool:
        """Whether to stop: the limit is reached and the last batch written is committed
        (`finished`: the last batch each query finished), so that none is cut short; or a
        batch called for a new bound and is committed. That call is kept: when batches come
        back to back, the next one is often written before the last is committed."""
        count = self.resized()
        if count is not None:
            self.resize_after = (self.totals.batch, count, self.totals.batch_records, self.totals.batch_bytes)
        last = finished.get(STREAM_QUERY, -1)
        if self.limit_reached():
            return last >= self.totals.batch
        return self.resize_after is not None and last >= self.resize_after[0]


def warn_of_deduplication(config: JobConfig) -> None:
    """What a de-duplicating job on a Parquet table should know, once a run: it takes a second query."""
    if config.output.deduplicate_gap and config.output.format == PARQUET:
        log.warning("De-duplicating a Parquet table takes a second query, which reads and decodes the topics again and "
                    "holds whole alerts in Spark's state until the stream moves %s past them: on a backlog it can run "
                    "out of memory (bench/DEDUP.md). An Iceberg table (output.format iceberg, the default) merges "
                    "copies in the job's one query.", config.output.deduplicate_gap)


def refuse_start_on_a_used_checkpoint(config: JobConfig) -> None:
    """A start position applies to a new checkpoint only: Spark ignores it on a used one,
    which would silently go on from where it stopped."""
    state = checkpoint_files(config)
    if state.names("alerts/offsets"):
        raise ConfigError(
            f"--start-at applies to a new checkpoint, and {config.output.checkpoint} has been used: the job would go on "
            "from where it stopped. Leave out --start-at to go on, or give a new --checkpoint (or --output) to start "
            "over at that point."
        )


def prepare_stream(config: JobConfig) -> StreamPlan:
    """Check that the topics can be read (failing fast on credentials) and choose the schemas."""
    if config.kafka is None:
        raise ConfigError("Missing required key 'kafka'.")
    partitions = subscribed_partitions(config.kafka)
    state = checkpoint_files(config)
    warn_of_deduplication(config)
    # Where reading begins: after the last committed batch, or at the configured start.
    starts = committed_offsets(state)
    starting_offsets = None
    if not starts and config.kafka.start_time is not None:
        starts = offsets_at_time(config.kafka, partitions, config.kafka.start_time)
        starting_offsets = offsets_json(starts)
        log.info("Starting at %s: offsets %s", config.kafka.starting_offsets, starting_offsets)
    elif not starts and config.kafka.starting_offsets == "earliest":
        starts = earliest_offsets(config.kafka, partitions)
    newest_messages = newest(config.kafka, partitions, starts=starts)
    newest_keys = [message.key for message in newest_messages if message.key is not None]
    writers = WriterSchemas(config.survey)
    saved = state.read(WRITER_SCHEMAS)
    if saved is not None:
        writers.add_json(saved)
    bundled = writers.bundled_versions()
    for key in newest_keys:
        if key_kind(key) == "json" or key in bundled:
            writers.learn(key)
    for topic in partitions:
        if topic.startswith(TRANSFER_PREFIX):
            writers.by_topic[topic] = topic_schema(config.kafka, topic, config.survey)
    table = starting_table_schema(config, state, writers, newest_keys)
    state.write(WRITER_SCHEMAS, writers.to_json())
    if config.kafka.on_data_loss == "skip":
        record_skipped_offsets(config, partitions, state)
    max_offsets = records_per_batch(config.kafka, newest_messages, config.trigger.limit)
    return StreamPlan(config, writers, table, state, max_offsets, starting_offsets, starts,
                      partitions=sum(partitions.values()))


def records_per_batch(kafka: KafkaConfig, newest_messages: list[Message], limit: int | None = None) -> int | None:
    """The most records a micro-batch reads at first, from the size of the first and newest
    messages to read (ZTF alerts weigh about 50 kB, LSST alerts about 230 kB): a backlog is so
    drained in batches of bounded size whatever its length; `StreamPlan.resized` follows the
    messages' size as it changes."""
    sizes = [message.size for message in newest_messages]
    bound = batch_bound(kafka, limit, len(sizes), sum(sizes))
    if sizes and sum(sizes):
        log.info("Micro-batches of at most %d records (%.1f MB at %.0f kB per message)", bound,
                 kafka.max_bytes_per_trigger / 1e6, sum(sizes) / len(sizes) / 1000)
    return bound


def batch_bound(kafka: KafkaConfig, limit: int | None, records: int, size: int) -> int | None:
    """The one rule of a micro-batch's size: `kafka.max_bytes_per_trigger` over the mean size of
    messages (`records` of them weighing `size` bytes), within `kafka.max_offsets_per_trigger`
    and `trigger.limit` (a job with a limit overshoots it by at most one small batch)."""
    by_bytes = max(1, kafka.max_bytes_per_trigger * records // size) if records and size else None
    caps = [cap for cap in (by_bytes, kafka.max_offsets_per_trigger, limit) if cap]
    return min(caps) if caps else None


def committed_offsets(state: CheckpointFiles, query: str = STREAM_QUERY) -> dict[str, dict[int, int]]:
    """Where a query stopped: the end offsets of its last committed batch."""
    commits = [int(name) for name in state.names(f"{query}/commits") if name.isdigit()]
    text = state.read(f"{query}/offsets/{max(commits)}") if commits else None
    if text is None:
        return {}
    lines = text.splitlines()
    offsets: dict[str, dict[int, int]] = {}
    for line in lines[2:]:
        for topic, parts in spark_offsets(line).items():
            offsets.setdefault(topic, {}).update(parts)
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
        previous = json.loads(state.read(SKIPPED_OFFSETS) or "[]")
        state.write(SKIPPED_OFFSETS, json.dumps(previous + [{"recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                   "gaps": gaps}], indent=1))
        for gap in gaps:
            log.warning("Skipping %s[%d] offsets %d to %d: deleted from the broker before the job read them (see %s)",
                        gap["topic"], gap["partition"], gap["from_offset"], gap["to_offset"] - 1, SKIPPED_OFFSETS)


def run_stream(spark: SparkSession, plan: StreamPlan, out: TextIO | None = None) -> None:
    """Run the job until it is stopped (processing-time trigger) or has read everything (available now)."""
    kafka = plan.config.kafka
    pending_quarantine = PendingQuarantine(spark, plan.state, lambda positions: records_at(kafka, positions, FETCHED_BYTES_AT_MOST))
    with quiet_planned_stops():
        _run_until_done(spark, plan, out, BatchProgress(plan.first_offsets), pending_quarantine)
    pending_quarantine.write_now()  # a failed run leaves it in the checkpoint, for the next start


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


def _run_until_done(spark: SparkSession, plan: StreamPlan, out: TextIO | None, progress: BatchProgress,
                    pending_quarantine: PendingQuarantine) -> None:
    config, writers, state = plan.config, plan.writers, plan.state
    while True:
        queries = start_queries(spark, plan, pending_quarantine, out)
        try:
            stopped = progress.wait_for(queries, plan.done)
            if stopped and plan.resize_after is not None and not plan.limit_reached():
                batch, count, records, size = plan.resize_after
                log.info("Micro-batch %d read %d records, %.1f MB (kafka.max_bytes_per_trigger: %.1f MB): micro-batches "
                         "of at most %d records from here", batch, records, size / 1e6,
                         config.kafka.max_bytes_per_trigger / 1e6, count)
                plan.max_offsets_per_trigger, plan.resize_after = count, None
                plan.totals.batch_records = plan.totals.batch_bytes = 0
                continue
            progress.log_totals()
            if plan.limit_reached():
                log.info("Stopped after %d alerts kept (--limit %d); the checkpoint goes on from there",
                         plan.totals.kept, config.trigger.limit)
            return
        except StreamingQueryException as error:
            # The first query to fail may be one that another's failure interrupted: look at all of them.
            failures = [str(error)] + [str(query.exception()) for query in queries if query.exception() is not None]
            if not learn_schema_at(failures, config.kafka, writers, plan.table):
                raise _explained(error, config) from None
            for query in queries:  # a query stopped while writing its log leaves a temporary file there
                state.remove_temporary_files(f"{query.name}/offsets")
                state.remove_temporary_files(f"{query.name}/commits")
            state.write(WRITER_SCHEMAS, writers.to_json())
