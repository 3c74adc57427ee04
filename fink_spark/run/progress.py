"""The job's progress on its log: one line per micro-batch, totals at the end."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress

from pyspark.errors import StreamingQueryException
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.listener import StreamingQueryProgress

from fink_spark.kafka.positions import Offsets, lag_line, spark_offsets

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0  # seconds between looks at the queries' progress


class BatchProgress:
    """One line per micro-batch on the job's log (how many records, how fast), and the
    totals of each query over all its batches (start-up excluded).

    It reads the queries' progress (Spark's JSON) while the job waits for them, rather
    than listening: a Python `StreamingQueryListener` is called back through py4j for
    every event, and its conversions took as much CPU as the query's own driver thread,
    on cores the tasks need (bench/TUNING.md).
    """

    def __init__(self, first_offsets: Offsets | None = None) -> None:
        self.totals: dict[str, list[float]] = {}  # query name -> [records, seconds of micro-batches]
        self.last_batch: dict[str, int] = {}
        self.first_offsets = first_offsets or {}  # where a new checkpoint's first batch starts

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
        records, seconds = batch_records(progress, self.first_offsets), progress.durationMs.get("triggerExecution", 0) / 1000
        total = self.totals.setdefault(progress.name, [0, 0.0])
        total[0] += records
        total[1] += seconds
        line = (f"{progress.name}: batch {progress.batchId}, {records} records in {seconds:.2f} s, "
                f"{records / seconds if seconds else 0.0:.0f} records/s")
        newest = [spark_offsets(source.latestOffset) for source in progress.sources if "kafka" in source.description.lower()]
        if newest and newest[0]:  # the offsets read against the newest offsets the source saw
            rate = total[0] / total[1] if total[1] else 0.0
            line += "; " + lag_line(spark_offsets(progress.sources[0].endOffset), newest[0], rate)
        log.info("%s", line)

    def wait_for(self, queries: list[StreamingQuery], done: Callable[[dict[str, int]], bool] | None = None) -> bool:
        """Wait until every query has ended (available now), `done(last batches finished)`
        holds (then they are stopped, and True is returned) or one fails, logging their
        batches meanwhile; a failure stops the others and is raised.

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
                    self.follow(queries)
                    return True
                with suppress(StreamingQueryException):  # raised again above, with the others stopped
                    active[0].awaitTermination(PROGRESS_INTERVAL)
                self.follow(queries)
        except BaseException:
            for query in queries:
                if query.isActive:
                    query.stop()
            raise
        self.follow(queries)
        return False

    def log_totals(self) -> None:
        """Log each query's totals (after `wait_for`, which logged its last batches)."""
        for name, (records, seconds) in self.totals.items():
            log.info("%s done: %d records in %.1f s of micro-batches (%.0f records/s)",
                     name, records, seconds, records / seconds if seconds else 0.0)


def batch_records(progress: StreamingQueryProgress, first_offsets: Offsets) -> int:
    """The records a micro-batch holds: for Kafka, its end offsets minus its start offsets
    (`first_offsets` for a new checkpoint's first batch, which Spark gives none). Spark's
    `numInputRows` counts every read of the source, and a batch with quarantined records
    is read twice (`sinks.MicroBatchOutputs`)."""
    counted = 0
    for source in progress.sources:
        if "kafka" not in source.description.lower():
            return progress.numInputRows
        start, end = spark_offsets(source.startOffset) or first_offsets, spark_offsets(source.endOffset)
        if not start or not end:
            return progress.numInputRows
        counted += sum(offset - start.get(topic, {}).get(partition, offset)
                       for topic, parts in end.items() for partition, offset in parts.items())
    return counted

