"""The live job's quarantine, written beside the stream.

A micro-batch's quarantined records are few: the table's pass notes their positions and
reasons, and one thread fetches those records back from Kafka and appends them to the
quarantine while the next micro-batch is read and written (bench/POISON.md). The appends
keep batch order (a sink knows a batch by the newest it committed).

Until its append is committed, a batch's positions and reasons wait in the checkpoint
(`fink_spark/quarantine_pending/<batch>.json`), written before Spark commits the batch: a
job that stops or crashes meanwhile writes them at its next start (`write_pending`), so
that a quarantined record is never lost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from fink_spark.kafka_source import KAFKA_RECORD
from fink_spark.state import PENDING_QUARANTINE, CheckpointFiles

if TYPE_CHECKING:
    from fink_spark.sinks import Sink

log = logging.getLogger(__name__)

Position = tuple[str, int, int]  # topic, partition, offset
# A batch's quarantined records fetched by the driver, at most; more: the batch is read again
FETCHED_AT_MOST, FETCHED_BYTES_AT_MOST = 200, 64 * 1024 * 1024
GONE = "; the record was gone from the broker when the quarantine was written"


class PendingQuarantine:
    """Quarantined records written by their positions, in batch order, on one thread."""

    def __init__(self, spark: SparkSession, state: CheckpointFiles, fetch: Callable[[list[Position]], pa.Table | None]) -> None:
        # the job's own session: a micro-batch's session carries a merge's snapshot tags meanwhile
        self.spark, self.state, self.fetch = spark, state, fetch
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fink-spark-quarantine")
        self._last: Future | None = None

    @staticmethod
    def can_take(count: int, size: int) -> bool:
        """Whether a batch's quarantined records are few and light enough to fetch back."""
        return count <= FETCHED_AT_MOST and size <= FETCHED_BYTES_AT_MOST

    def submit(self, sink: Sink, select: Callable[[DataFrame], DataFrame], batch_id: int, reasons: dict[Position, str]) -> None:
        """Note the batch's positions in the checkpoint, then append them beside the stream."""
        self.raise_failure()
        records = [[*position, reason] for position, reason in sorted(reasons.items())]
        self.state.write(_pending(batch_id), json.dumps({"batch": batch_id, "records": records}))
        self._last = self._thread.submit(self._write, sink, select, batch_id)

    def wait(self) -> None:
        """Wait for the appends submitted; raise the error of one that failed (its positions
        stay in the checkpoint, for the next start)."""
        last, self._last = self._last, None
        if last is not None:
            last.result()

    def close(self, quietly: bool = False) -> None:
        """At the job's end: wait for the appends submitted, then stop the thread. Quietly
        (the job failed already): an append that failed is logged, not raised."""
        try:
            self.wait()
        except Exception as error:
            if not quietly:
                raise
            log.error("The quarantine of the last micro-batch was not written (%s): the next start writes it", error)
        finally:
            self._thread.shutdown()

    def raise_failure(self) -> None:
        """Raise the error of a finished append that failed, without waiting."""
        if self._last is not None and self._last.done():
            self.wait()

    def write_pending(self, sink: Sink, select: Callable[[DataFrame], DataFrame]) -> None:
        """Write the quarantine that a stop or crash left unwritten (before the query starts)."""
        self.wait()
        for batch_id in sorted(int(name.removesuffix(".json")) for name in self.state.names(PENDING_QUARANTINE)
                               if name.removesuffix(".json").isdigit()):
            log.info("Writing the quarantine of micro-batch %d, which the last run left unwritten", batch_id)
            self._write(sink, select, batch_id)

    def _write(self, sink: Sink, select: Callable[[DataFrame], DataFrame], batch_id: int) -> None:
        pending = json.loads(self.state.read(_pending(batch_id)) or "null")
        if pending is not None and not sink.has(batch_id):
            reasons = {(topic, partition, offset): reason for topic, partition, offset, reason in pending["records"]}
            sink.write(batch_id, self._records(reasons).transform(select))
        self.state.remove(_pending(batch_id))

    def _records(self, reasons: dict[Position, str]) -> DataFrame:
        """The raw records at the positions with their reasons; a record gone from the broker
        (retention, after a long stop) keeps its position and reason, and says so."""
        fetched = self.fetch(list(reasons)) or pa.Table.from_pylist([], schema=KAFKA_RECORD)
        rows = fetched.to_pylist()
        found = {(row["topic"], row["partition"], row["offset"]) for row in rows}
        gone = [position for position in reasons if position not in found]
        if gone:
            log.warning("%d quarantined records were gone from the broker when the quarantine was written (%s): their "
                        "positions and reasons are kept, without key or value", len(gone),
                        ", ".join(f"{t}[{p}] offset {o}" for t, p, o in gone[:5]))
        rows += [{"topic": topic, "partition": partition, "offset": offset} for topic, partition, offset in gone]
        with_reasons = [{**row, "reject_reason": reasons[(row["topic"], row["partition"], row["offset"])]
                         + ("" if (row["topic"], row["partition"], row["offset"]) in found else GONE)} for row in rows]
        table = pa.Table.from_pylist(with_reasons, schema=KAFKA_RECORD.append(pa.field("reject_reason", pa.string())))
        # one task, so one file a batch (a frame of local rows is otherwise split among the cores)
        return self.spark.createDataFrame(table).coalesce(1)


def _pending(batch_id: int) -> str:
    return f"{PENDING_QUARANTINE}/{batch_id}.json"
