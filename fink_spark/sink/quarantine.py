"""The live job's quarantine, written beside the stream, a minute's batches at once.

A micro-batch's quarantined records are few: the table's pass notes their positions and
reasons, and they wait in the checkpoint (`fink_spark/quarantine_pending/<batch>.json`,
written before Spark commits the batch). While the stream goes on, one thread fetches each
batch's records back from Kafka as it comes, and appends those of the batches gathered (for
a minute at most, 1,000 records, 64 MB) to the quarantine in one commit: an append costs
about as much for one batch as for ten (bench/POISON.md).

A sink knows a batch by the newest it committed, so the gathered batches are committed as
the newest of them, the others committed empty before it (a Parquet folder's log lists
every batch id), and the batches go in order: a batch with nothing to quarantine joins
the gathered ones while any wait, and any other quarantine write waits for them all.
A job that stops or crashes before an append is committed writes it at its next start
(`write_pending`): the gathered batches are named in the checkpoint (`group.json`) before
their append begins, so that a quarantined record is never lost nor written twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from fink_spark.kafka.source import KAFKA_RECORD
from fink_spark.state import PENDING_QUARANTINE, QUARANTINE_GROUP, CheckpointFiles

if TYPE_CHECKING:
    from fink_spark.sink import Sink

log = logging.getLogger(__name__)

Position = tuple[str, int, int]  # topic, partition, offset
# The quarantined records gathered for one append, at most; a batch with more is written from the batch read again
GATHERED_AT_MOST, FETCHED_BYTES_AT_MOST = 1000, 64 * 1024 * 1024
GATHERED_FOR = 60.0  # seconds, at most, between a batch's quarantine and its append
GONE = "; the record was gone from the broker when the quarantine was written"


class PendingQuarantine:
    """Quarantined records gathered by their positions and appended, in batch order, on one thread."""

    def __init__(self, spark: SparkSession, state: CheckpointFiles, fetch: Callable[[list[Position]], pa.Table | None],
                 gathered_for: float = GATHERED_FOR) -> None:
        # the job's own session: a micro-batch's session carries a merge's snapshot tags meanwhile
        self.spark, self.state, self.fetch, self.gathered_for = spark, state, fetch, gathered_for
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fink-spark-quarantine")
        self._lock = threading.Lock()
        self._gathered: list[int] = []  # batch ids noted in the checkpoint, not handed to the thread yet
        self._records = self._bytes = 0
        self._since = 0.0  # when the first of them was gathered (time.monotonic)
        self._timer: threading.Timer | None = None
        self._output: tuple[Sink, Callable[[DataFrame], DataFrame]] | None = None
        self._last: Future | None = None
        self._failure: Exception | None = None
        self._fetched: dict[int, pa.Table] = {}  # gathered batches' records, fetched as they come (on the thread)

    @staticmethod
    def can_take(count: int, size: int) -> bool:
        """Whether quarantined records (a batch's, or those gathered) are few and light enough
        to fetch back for one append."""
        return count <= GATHERED_AT_MOST and size <= FETCHED_BYTES_AT_MOST

    def busy(self) -> bool:
        """Whether batches are gathered or being appended: a later batch must go after them."""
        with self._lock:
            return bool(self._gathered) or (self._last is not None and not self._last.done())

    def submit(self, sink: Sink, select: Callable[[DataFrame], DataFrame], batch_id: int, reasons: dict[Position, str],
               size: int) -> None:
        """Note the batch's positions (`size` bytes of records) in the checkpoint and gather
        them; the gathered batches are handed to the thread once a minute, or as they fill an append."""
        self.raise_failure()
        records = [[*position, reason] for position, reason in sorted(reasons.items())]
        self.state.write(_pending(batch_id), json.dumps({"batch": batch_id, "records": records}))
        with self._lock:
            if self._gathered and not self.can_take(self._records + len(records), self._bytes + size):
                self._hand_over()
            self._output = (sink, select)
            if not self._gathered:
                self._since = time.monotonic()
                self._timer = threading.Timer(self.gathered_for, self._hand_over_after_wait, args=(self._since,))
                self._timer.daemon = True
                self._timer.start()
            self._gathered.append(batch_id)
            self._records, self._bytes = self._records + len(records), self._bytes + size
            if records:  # fetched now, while the broker still has them at hand: the append waits for less
                self._last = self._thread.submit(self._fetch_ahead, batch_id, sorted(reasons))
            if self._due():
                self._hand_over()

    def write_now(self) -> None:
        """Append the batches gathered and wait for every append; raise the error of one
        that failed (its positions stay in the checkpoint, for the next start)."""
        with self._lock:
            if self._gathered:
                self._hand_over()
            last = self._last
        if last is not None:
            last.result()
        self.raise_failure()

    def close(self, quietly: bool = False) -> None:
        """At the job's end: append the batches gathered, then stop the thread. Quietly (the
        job failed already): an append that failed is logged, not raised."""
        try:
            self.write_now()
        except Exception as error:
            if not quietly:
                raise
            log.error("The quarantine of the last micro-batches was not written (%s): the next start writes it", error)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._thread.shutdown()

    def raise_failure(self) -> None:
        """Raise the error of a fetch or an append that failed, without waiting."""
        if self._failure is not None:
            raise self._failure

    def write_pending(self, sink: Sink, select: Callable[[DataFrame], DataFrame]) -> None:
        """Write the quarantine that a stop or crash left unwritten (before the query starts):
        the append that was under way, then the batches gathered after it."""
        self.write_now()
        group = self.state.read(QUARANTINE_GROUP)
        if group is not None:
            self._write(sink, select, json.loads(group))
        left = _pending_batches(self.state)
        if left:
            log.info("Writing the quarantine of micro-batches %d to %d, which the last run left unwritten", left[0], left[-1])
            self._write(sink, select, left)

    def _due(self) -> bool:
        full = self._records >= GATHERED_AT_MOST or self._bytes >= FETCHED_BYTES_AT_MOST
        return full or time.monotonic() - self._since >= self.gathered_for

    def _hand_over_after_wait(self, since: float) -> None:
        """The timer's: hand over the batches gathered since then, if they still wait (an idle stream's)."""
        with self._lock:
            if self._gathered and self._since == since:
                self._hand_over()

    def _hand_over(self) -> None:
        """Hand the gathered batches to the thread (holding the lock)."""
        batches, self._gathered, self._records, self._bytes = self._gathered, [], 0, 0
        if self._timer is not None:
            self._timer.cancel()
        assert self._output is not None
        self._last = self._thread.submit(self._append, *self._output, batches)

    def _fetch_ahead(self, batch_id: int, positions: list[Position]) -> None:
        """On the thread: a gathered batch's records (the append fetches any it lacks)."""
        if self._failure is None:
            try:
                fetched = self.fetch(positions)
            except Exception as error:
                self._failure = error
            else:
                if fetched is not None:
                    self._fetched[batch_id] = fetched

    def _append(self, sink: Sink, select: Callable[[DataFrame], DataFrame], batches: list[int]) -> None:
        """On the thread: after an append failed, none (the query fails at its next batch)."""
        if self._failure is None:
            try:
                self._write(sink, select, batches)
            except Exception as error:
                self._failure = error

    def _write(self, sink: Sink, select: Callable[[DataFrame], DataFrame], batches: list[int]) -> None:
        """Commit these batches' quarantine as the newest of them, once."""
        self.state.write(QUARANTINE_GROUP, json.dumps(batches))
        fetched = [self._fetched.pop(batch_id) for batch_id in batches if batch_id in self._fetched]
        if not sink.has(batches[-1]):
            reasons = {}
            for batch_id in batches:
                reasons.update({(topic, partition, offset): reason
                                for topic, partition, offset, reason in _pending_records(self.state, batch_id)})
            for batch_id in batches[:-1]:
                sink.write_nothing(batch_id)
            if reasons:
                sink.write(batches[-1], self._records_at(reasons, fetched).transform(select))
            else:
                sink.write_nothing(batches[-1])
        for batch_id in batches:
            self.state.remove(_pending(batch_id))
        self.state.remove(QUARANTINE_GROUP)

    def _records_at(self, reasons: dict[Position, str], fetched: list[pa.Table]) -> DataFrame:
        """The raw records at the positions with their reasons, from those `fetched` ahead
        and the broker; a record gone from the broker (retention, after a long stop) keeps
        its position and reason, and says so."""
        rows = [row for table in fetched for row in table.to_pylist() if (row["topic"], row["partition"], row["offset"]) in reasons]
        found = {(row["topic"], row["partition"], row["offset"]) for row in rows}
        lacking = [position for position in reasons if position not in found]
        if lacking:
            rows += (self.fetch(lacking) or pa.Table.from_pylist([], schema=KAFKA_RECORD)).to_pylist()
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
        # one task, so one file an append (a frame of local rows is otherwise split among the cores)
        return self.spark.createDataFrame(table).coalesce(1)


def waiting(state: CheckpointFiles) -> tuple[int, int]:
    """The quarantined records noted in a job's checkpoint and not appended yet, and their micro-batches."""
    batches = _pending_batches(state)
    return sum(len(_pending_records(state, batch_id)) for batch_id in batches), len(batches)


def _pending_batches(state: CheckpointFiles) -> list[int]:
    """The batches whose positions wait in the checkpoint, in order."""
    return sorted(int(name.removesuffix(".json")) for name in state.names(PENDING_QUARANTINE) if name.removesuffix(".json").isdigit())


def _pending_records(state: CheckpointFiles, batch_id: int) -> list[list]:
    """A batch's [topic, partition, offset, reason] waiting in the checkpoint (none if its file is gone)."""
    return json.loads(state.read(_pending(batch_id)) or '{"records": []}')["records"]


def _pending(batch_id: int) -> str:
    return f"{PENDING_QUARANTINE}/{batch_id}.json"
