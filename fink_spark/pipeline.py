"""What the live job and reprocessing share: the table's schema at the start, the alerts
the sinks see, the schema learned at a stop, and the log of micro-batches."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.listener import StreamingQueryProgress

from fink_spark.config import JobConfig, KafkaConfig
from fink_spark.decode import UNKNOWN_SCHEMA, flatten_alerts
from fink_spark.filters import Filter, apply_filters
from fink_spark.kafka_source import key_at
from fink_spark.positions import lag_line, spark_offsets
from fink_spark.schemas import WriterSchemas, load_schema_text
from fink_spark.state import LEGACY_READER_SCHEMA, TABLE_SCHEMA, CheckpointFiles
from fink_spark.surveys import Survey
from fink_spark.table_schema import TableSchema

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0  # seconds between looks at the queries' progress

# A micro-batch stopped at a writer schema not met yet says where, in its error's text:
# the position is known only inside the task that met it (`decode._reject_reason`).
_WHERE = re.compile(UNKNOWN_SCHEMA + r" \(topic (?P<topic>.+?), partition (?P<partition>\d+), offset (?P<offset>\d+)\)")


def kept_alerts(survey: Survey, filters: tuple[Filter, ...]) -> Callable[[DataFrame], DataFrame]:
    """Decoded records -> the alerts that pass the filters: what the sinks see."""
    return lambda decoded: decoded.transform(flatten_alerts(survey)).transform(apply_filters(filters))


def table_schema(config: JobConfig, state: CheckpointFiles, writers: WriterSchemas, newest_keys: list[bytes]) -> TableSchema:
    """The output table's schema: the one this checkpoint has built so far; for a new
    checkpoint, the configured schema, else the writer schema of the topics' newest
    message (the richest, when they differ), else the newest bundled one. Every writer
    schema known is then merged in (a no-op for those merged before)."""
    saved = state.read(TABLE_SCHEMA)
    if saved is not None:
        table = TableSchema.from_json(saved)
    else:
        start = state.read(LEGACY_READER_SCHEMA)  # checkpoints of fink-spark before schema evolution
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


class BatchProgress:
    """One line per micro-batch on the job's log (how many records, how fast), and the
    totals of each query over all its batches (start-up excluded).

    It reads the queries' progress (Spark's JSON) while the job waits for them, rather
    than listening: a Python `StreamingQueryListener` is called back through py4j for
    every event, and its conversions took as much CPU as the query's own driver thread,
    on cores the tasks need (bench/TUNING.md).
    """

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}  # query name -> [records, seconds of micro-batches]
        self.last_batch: dict[str, int] = {}

    def follow(self, queries: list[StreamingQuery]) -> None:
        """Log the micro-batches the queries finished since the last call."""
        for query in queries:
            seen = self.last_batch.get(query.name, -1)
            last = query.lastProgress
            if last is None or last.batchId <= seen:
                continue
            # Spark keeps the last 100 (spark.sql.streaming.numRecentProgressUpdates)
            progresses = [last] if last.batchId == seen + 1 else query.recentProgress
            for progress in progresses:
                if progress.batchId > self.last_batch.get(query.name, -1):
                    self.last_batch[query.name] = progress.batchId
                    if progress.numInputRows:
                        self.on_batch(progress)

    def on_batch(self, progress: StreamingQueryProgress) -> None:
        total = self.totals.setdefault(progress.name, [0, 0.0])
        total[0] += progress.numInputRows
        total[1] += progress.durationMs.get("triggerExecution", 0) / 1000
        line = (f"{progress.name}: batch {progress.batchId}, {progress.numInputRows} records in "
                f"{progress.durationMs.get('triggerExecution', 0) / 1000:.2f} s, {progress.processedRowsPerSecond:.0f} records/s")
        newest = [spark_offsets(source.latestOffset) for source in progress.sources if "kafka" in source.description.lower()]
        if newest and newest[0]:  # the offsets read against the newest offsets the source saw
            rate = total[0] / total[1] if total[1] else 0.0
            line += "; " + lag_line(spark_offsets(progress.sources[0].endOffset), newest[0], rate)
        log.info("%s", line)

    def wait_for(self, queries: list[StreamingQuery], done: Callable[[dict[str, int]], bool] | None = None) -> None:
        """Wait until every query has ended (available now), `done(last batches finished)`
        holds (then they are stopped) or one fails, logging their batches meanwhile; a
        failure stops the others and is raised.

        Each query is asked about itself: the session's `awaitAnyTermination` keeps the
        last query to fail until reset, and a query that failed before the wait began
        would otherwise pass unseen, its error raised instead in a later, healthy job."""
        try:
            while True:
                failed = next(filter(None, (query.exception() for query in queries)), None)
                if failed is not None:
                    raise failed
                active = [query for query in queries if query.isActive]
                if not active:
                    break
                if done is not None and done(self.last_batch):
                    for query in active:  # a batch it interrupts was not committed: a restart reads it again
                        query.stop()
                    break
                with suppress(StreamingQueryException):  # raised again above, with the others stopped
                    active[0].awaitTermination(PROGRESS_INTERVAL)
                self.follow(queries)
        except BaseException:
            for query in queries:
                if query.isActive:
                    query.stop()
            raise
        self.follow(queries)

    def log_totals(self) -> None:
        """Log each query's totals (after `wait_for`, which logged its last batches)."""
        for name, (records, seconds) in self.totals.items():
            log.info("%s done: %d records in %.1f s of micro-batches (%.0f records/s)",
                     name, records, seconds, records / seconds if seconds else 0.0)
