"""The live job's quarantine, gathered for a minute and appended at once.

A micro-batch's quarantined records are few: the table's pass notes their positions and
reasons, and they wait in the checkpoint (`fink_spark/quarantine_pending/<batch>.json`,
written before Spark commits the batch). The first micro-batch that ends a minute after
the first of them waited, or that fills an append (1,000 records, 64 MB), fetches them
back from Kafka by position and appends them to the quarantine in one commit: an append
costs about as much for one batch as for ten (bench/POISON.md). An idle stream's wait
until its next micro-batch, or its stop.

A sink knows a batch by the newest it committed, so the gathered batches are committed as
the newest of them, the others committed empty before it (a Parquet folder's log lists
every batch id), and the batches go in order: a batch with nothing to quarantine joins
the gathered ones while any wait, and any other quarantine write comes after them. The
batches waiting in the checkpoint are always the ones gathered, so a job that stops or
crashes before their append is committed appends them all at its next start
(`open`): a quarantined record is never lost nor written twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from fink_spark.kafka.source import KAFKA_RECORD
from fink_spark.state import PENDING_QUARANTINE, CheckpointFiles

if TYPE_CHECKING:
    from fink_spark.sink import Sink

log = logging.getLogger(__name__)

Position = tuple[str, int, int]  # topic, partition, offset
# The quarantined records gathered for one append, at most; a batch with more is written from the batch read again
GATHERED_AT_MOST, FETCHED_BYTES_AT_MOST = 1000, 64 * 1024 * 1024
GATHERED_FOR = 60.0  # seconds, at most, between a batch's quarantine and its append (while batches come)
GONE = "; the record was gone from the broker when the quarantine was written"


class PendingQuarantine:
    """Quarantined records gathered by their positions, appended by the micro-batch that finds them due."""

    def __init__(self, spark: SparkSession, state: CheckpointFiles, fetch: Callable[[list[Position]], pa.Table | None],
                 gathered_for: float = GATHERED_FOR) -> None:
        # the job's own session: a micro-batch's session carries a merge's snapshot tags meanwhile
        self.spark, self.state, self.fetch, self.gathered_for = spark, state, fetch, gathered_for
        self._gathered: list[int] = []  # batch ids noted in the checkpoint, not appended yet
        self._records = self._bytes = 0
        self._since = 0.0  # when the first of them was gathered (time.monotonic)
        self._output: tuple[Sink, Callable[[DataFrame], DataFrame]] | None = None

    @staticmethod
    def can_take(count: int, size: int) -> bool:
        """Whether quarantined records (a batch's, or those gathered) are few and light enough
        to fetch back for one append."""
        return count <= GATHERED_AT_MOST and size <= FETCHED_BYTES_AT_MOST

    def busy(self) -> bool:
        """Whether batches are gathered: a later batch must go after them."""
        return bool(self._gathered)

    def open(self, sink: Sink, select: Callable[[DataFrame], DataFrame]) -> None:
        """At a query's start: append to `sink` (its records through `select`) from now on,
        first the batches that a stop or a crash left waiting in the checkpoint."""
        self._output, self._gathered, self._records, self._bytes = (sink, select), [], 0, 0
        left = _pending_batches(self.state)
        if left:
            log.info("Writing the quarantine of micro-batches %d to %d, which the last run left unwritten", left[0], left[-1])
            self._write(left)

    def submit(self, batch_id: int, reasons: dict[Position, str], size: int) -> None:
        """Note the batch's positions (`size` bytes of records) in the checkpoint and gather
        them; append the gathered batches once they fill an append or have waited a minute."""
        records = [[*position, reason] for position, reason in sorted(reasons.items())]
        if self._gathered and not self.can_take(self._records + len(records), self._bytes + size):
            self.write_now()
        self.state.write(_pending(batch_id), json.dumps({"batch": batch_id, "records": records}))
        if not self._gathered:
            self._since = time.monotonic()
        self._gathered.append(batch_id)
        self._records, self._bytes = self._records + len(records), self._bytes + size
        full = self._records >= GATHERED_AT_MOST or self._bytes >= FETCHED_BYTES_AT_MOST
        if full or time.monotonic() - self._since >= self.gathered_for:
            self.write_now()

    def write_now(self) -> None:
        """Append the batches gathered, if any (at the end of a run, and before any other
        quarantine write); an append that fails leaves them in the checkpoint, for the next start."""
        if self._gathered:
            batches = self._gathered
            self._gathered, self._records, self._bytes = [], 0, 0
            self._write(batches)

    def _write(self, batches: list[int]) -> None:
        """Commit these batches' quarantine as the newest of them, once."""
        if self._output is None:
            raise RuntimeError("PendingQuarantine.open comes first: it names the sink")
        sink, select = self._output
        if not sink.has(batches[-1]):
            reasons = {}
            for batch_id in batches:
                reasons.update({(topic, partition, offset): reason
                                for topic, partition, offset, reason in _pending_records(self.state, batch_id)})
            for batch_id in batches[:-1]:
                sink.write_nothing(batch_id)
            if reasons:
                sink.write(batches[-1], self._records_at(reasons).transform(select))
            else:
                sink.write_nothing(batches[-1])
        for batch_id in batches:
            self.state.remove(_pending(batch_id))

    def _records_at(self, reasons: dict[Position, str]) -> DataFrame:
        """The raw records at the positions, with their reasons; a record gone from the broker
        (retention, after a long stop) keeps its position and reason, and says so."""
        fetched = self.fetch(sorted(reasons))
        rows = (fetched if fetched is not None else pa.Table.from_pylist([], schema=KAFKA_RECORD)).to_pylist()
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


def pending_positions(state: CheckpointFiles) -> list[list]:
    """[topic, partition, offset, reason] of every quarantined record noted and not appended yet."""
    return [record for batch_id in _pending_batches(state) for record in _pending_records(state, batch_id)]


def _pending_batches(state: CheckpointFiles) -> list[int]:
    """The batches whose positions wait in the checkpoint, in order."""
    return sorted(int(name.removesuffix(".json")) for name in state.names(PENDING_QUARANTINE) if name.removesuffix(".json").isdigit())


def _pending_records(state: CheckpointFiles, batch_id: int) -> list[list]:
    """A batch's [topic, partition, offset, reason] waiting in the checkpoint (none if its file is gone)."""
    return json.loads(state.read(_pending(batch_id)) or '{"records": []}')["records"]


def _pending(batch_id: int) -> str:
    return f"{PENDING_QUARANTINE}/{batch_id}.json"
