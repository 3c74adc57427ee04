"""The streaming job: Kafka -> decode -> filters -> Parquet, quarantine and console.

It runs three Spark streaming queries over the same topics, each with its own
checkpoint under the configured checkpoint folder: `alerts` (Parquet, exactly once),
`quarantine` (Parquet, the records that are not alerts) and `console`. When a record's
key carries a writer schema the job has not met, the queries stop; the job learns the
schema, saves it beside the checkpoint and starts them again from the checkpoint, so
that nothing is skipped and nothing lands twice.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from fink_spark.config import JobConfig
from fink_spark.decode import UNKNOWN_SCHEMA, alerts, decode_records, quarantined
from fink_spark.discover import TRANSFER_PREFIX, topic_schema
from fink_spark.errors import ConfigError, KafkaAccessError
from fink_spark.filters import Filter, apply_filters, check_filters, deduplicate, first_rejection
from fink_spark.kafka_source import earliest_offsets, key_at, newest_keys, read_stream, subscribed_partitions
from fink_spark.schemas import (
    WRITER_SCHEMAS_FILE,
    SchemaKeyError,
    WriterSchemas,
    key_kind,
    load_schema_text,
    writer_schema_from_key,
)
from fink_spark.sinks import console_query, parquet_query
from fink_spark.state import CheckpointFiles
from fink_spark.surveys import Survey

log = logging.getLogger(__name__)

READER_SCHEMA_FILE = "reader_schema.avsc"
_WHERE = re.compile(UNKNOWN_SCHEMA + r" \(topic (?P<topic>.+?), partition (?P<partition>\d+), offset (?P<offset>\d+)\)")


STATE = "fink_spark"


def job_files(config: JobConfig) -> CheckpointFiles:
    """The checkpoint folder: Spark's checkpoints, and fink_spark/ with the job's own state
    (reader schema, writer schemas met, skipped offsets)."""
    return CheckpointFiles.at(config.parquet.checkpoint)


def choose_reader_schema(config: JobConfig, state: CheckpointFiles, newest: list[bytes]) -> str:
    """The output table's schema: the configured file; else the one this checkpoint already
    uses; else the writer schema of the newest message (of the richest, when the topics'
    newest messages differ); else the newest bundled one."""
    saved = state.read(f"{STATE}/{READER_SCHEMA_FILE}")
    if config.schema:
        text = load_schema_text(config.schema)
    elif saved is not None:
        text = saved
    else:
        candidates = []
        for key in newest:
            try:
                candidates.append(writer_schema_from_key(key, config.survey))
            except SchemaKeyError:
                continue
        # Topics written with different schemas: keep the richest, so that no alert loses fields.
        text = max(candidates, key=lambda schema: len(json.loads(schema)["fields"]), default=None)
        if text is None:
            text = load_schema_text(config.survey.latest_schema)
    state.write(f"{STATE}/{READER_SCHEMA_FILE}", text)
    return text


class BatchLog(StreamingQueryListener):
    """One line per micro-batch on the job's log: how many records, how fast."""

    def onQueryStarted(self, event) -> None:  # noqa: N802, ANN001 - Spark's names
        pass

    def onQueryProgress(self, event) -> None:  # noqa: N802, ANN001
        progress = event.progress
        if progress.numInputRows:
            log.info(
                "%s: batch %d, %d records, %.0f records/s",
                progress.name, progress.batchId, progress.numInputRows, progress.processedRowsPerSecond,
            )

    def onQueryIdle(self, event) -> None:  # noqa: N802, ANN001
        pass

    def onQueryTerminated(self, event) -> None:  # noqa: N802, ANN001
        pass


def kept_alerts(survey: Survey, filters: tuple[Filter, ...]) -> Callable[[DataFrame], DataFrame]:
    """Decoded records -> the alerts that pass the filters: what the sinks see."""
    return lambda decoded: decoded.transform(alerts(survey)).transform(apply_filters(filters))


def start_queries(
    spark: SparkSession, config: JobConfig, writers: WriterSchemas, reader_schema: str,
    out: TextIO | None = None,
) -> list[StreamingQuery]:
    """Start the alerts, quarantine and console queries with the writer schemas known now."""
    survey, parquet, checkpoint = config.survey, config.parquet, config.parquet.checkpoint.rstrip("/")

    parallelism = spark.sparkContext.defaultParallelism

    def decoded(query: str, checks_only: bool = False) -> DataFrame:
        records = read_stream(spark, config.kafka, query, min_partitions=parallelism)
        return records.transform(decode_records(writers, reader_schema, survey, checks_only))

    kept = kept_alerts(survey, config.filters)
    check_filters(config.filters, decoded("alerts").transform(alerts(survey)))
    table = decoded("alerts").transform(kept)
    if parquet.deduplicate_gap:
        table = table.transform(deduplicate(survey, parquet.deduplicate_gap))
    queries = [
        parquet_query(table, parquet.path, f"{checkpoint}/alerts", parquet.partition_by, config.trigger, "alerts",
                      parquet.compression),
        parquet_query(
            quarantined(decoded("quarantine", checks_only=True)), parquet.quarantine, f"{checkpoint}/quarantine",
            tuple(column for column in parquet.partition_by if column == "topic"),
            config.trigger, "quarantine",
        ),
    ]
    if parquet.rejected_path:
        rejected = decoded("rejected").transform(alerts(survey)).transform(first_rejection(config.filters, survey))
        queries.append(
            parquet_query(rejected, parquet.rejected_path, f"{checkpoint}/rejected", ("topic",), config.trigger, "rejected")
        )
    if config.console.enabled:
        queries.append(
            console_query(decoded("console"), survey, kept, config.console, f"{checkpoint}/console", config.trigger, out)
        )
    return queries


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
    reader_schema: str
    state: CheckpointFiles


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
    newest = newest_keys(config.kafka, partitions, starts=starts)
    writers = WriterSchemas(config.survey)
    writers.add_bundled_versions()
    saved = state.read(f"{STATE}/{WRITER_SCHEMAS_FILE}")
    if saved is not None:
        writers.add_json(saved)
    for key in newest:
        if key_kind(key) == "json":
            writers.learn(key)
    for topic in partitions:
        if topic.startswith(TRANSFER_PREFIX):
            writers.by_topic[topic] = topic_schema(config.kafka, topic, config.survey)
    reader_schema = choose_reader_schema(config, state, newest)
    state.write(f"{STATE}/{WRITER_SCHEMAS_FILE}", writers.to_json())
    if config.kafka.on_data_loss == "skip":
        record_skipped_offsets(config, partitions, state)
    return StreamPlan(config, writers, reader_schema, state)


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


def run_stream(spark: SparkSession, plan: StreamPlan, out: TextIO | None = None) -> None:
    """Run the job until it is stopped (processing-time trigger) or has read everything (available now)."""
    progress = BatchLog()
    spark.streams.addListener(progress)
    try:
        _run_until_done(spark, plan, out)
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


def _log_totals(query: StreamingQuery) -> None:
    """How many records a finished query read, in how much micro-batch time (start-up excluded)."""
    batches = [progress for progress in query.recentProgress if progress["numInputRows"]]
    records = sum(progress["numInputRows"] for progress in batches)
    seconds = sum(progress["durationMs"].get("triggerExecution", 0) for progress in batches) / 1000
    if records:
        log.info("%s done: %d records in %.1f s of micro-batches (%.0f records/s)",
                 query.name, records, seconds, records / seconds if seconds else 0.0)


def _run_until_done(spark: SparkSession, plan: StreamPlan, out: TextIO | None) -> None:
    config, writers, state = plan.config, plan.writers, plan.state
    while True:
        queries = start_queries(spark, config, writers, plan.reader_schema, out)
        try:
            _await(spark, queries)
            for query in queries:
                _log_totals(query)
            return
        except StreamingQueryException as error:
            # The first query to fail may be one that another's failure interrupted: look at all of them.
            failures = [str(error)] + [str(query.exception()) for query in queries if query.exception() is not None]
            where = next((match for match in map(_WHERE.search, failures) if match), None)
            if where is None:
                raise _explained(error, config) from None
            for query in queries:  # a query stopped while writing its log leaves a temporary file there
                state.remove_temporary_files(f"{query.name}/offsets")
                state.remove_temporary_files(f"{query.name}/commits")
            key = key_at(config.kafka, where["topic"], int(where["partition"]), int(where["offset"]))
            if key is None or not writers.learn(key):
                raise
            state.write(f"{STATE}/{WRITER_SCHEMAS_FILE}", writers.to_json())
            log.info(
                "New writer schema met at %s[%s] offset %s: restarting the queries from the checkpoint",
                where["topic"], where["partition"], where["offset"],
            )
