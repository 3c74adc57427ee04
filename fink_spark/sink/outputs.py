"""The body of `foreachBatch`: one micro-batch of records feeds the table (or a table per
filter that names one), the quarantine, the rejected ids and the console, read from Kafka
and decoded once."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fink_spark.config.job import ConsoleOutput
from fink_spark.sink.console import first_lines, print_batch
from fink_spark.sink.metrics import PlanMetrics
from fink_spark.surveys import Survey
from fink_spark.transform.filters import Filter, counted_after, no_table_label, route_column, split_by_table, tables_of

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from fink_spark.sink import Sink
    from fink_spark.sink.quarantine import PendingQuarantine


def yields_text(yields: dict[str, list[int]]) -> str:
    """'filters[0] (...) passed 25 of 37 (68%), filters[1] (...) passed 13 of 25 (52%)'."""
    return ", ".join(f"{label} passed {passed:,} of {reached:,}" + (f" ({passed / reached:.0%})" if reached else "")
                     for label, (reached, passed) in yields.items())


def add_yields(totals: dict[str, list[int]], more: dict[str, list[int]]) -> None:
    """Add a batch's yields (per filter: [reached, passed]) to `totals`."""
    for label, (reached, passed) in more.items():
        total = totals.setdefault(label, [0, 0])
        total[0], total[1] = total[0] + reached, total[1] + passed


def run_plan(frame: DataFrame) -> None:
    """Run the frame's own plan once, for its observed metrics only (nothing is kept)."""
    frame._jdf.queryExecution().toRdd().count()


@dataclass
class BatchCounts:
    """What the micro-batches wrote: over all batches, and the last one's records and bytes
    (the stream sizes its next batches and stops by them; a batch committed before a
    restart, not read again, counts nothing)."""

    records: int = 0
    quarantined: int = 0
    kept: int = 0
    filtered: int = 0  # rejected by the filters
    rejected_by: dict[str, int] = field(default_factory=dict)  # by the filter that rejected them
    yields: dict[str, list[int]] = field(default_factory=dict)  # per filter: [alerts that reached it, alerts it passed]
    bytes: int = 0
    batch: int = -1  # the last batch written; -1 before the first
    batch_records: int = 0
    batch_bytes: int = 0

    def add(self, batch_id: int, counts: dict[str, Any] | None) -> None:
        """Count one batch (`counts`: the table's pass's, None for a batch written before)."""
        counts = counts or {}
        self.records += counts.get("records", 0)
        self.quarantined += counts.get("quarantined", 0)
        self.kept += counts.get("kept", 0)
        self.filtered += counts.get("filtered", 0)
        for label, count in counts.get("rejected_by", {}).items():
            self.rejected_by[label] = self.rejected_by.get(label, 0) + count
        add_yields(self.yields, counts.get("yields", {}))
        self.bytes += counts.get("bytes", 0)
        self.batch, self.batch_records, self.batch_bytes = batch_id, counts.get("records", 0), counts.get("bytes", 0)


@dataclass(frozen=True)
class MicroBatchOutputs:
    """Everything one micro-batch of records feeds (the body of `foreachBatch`).

    The batch is decoded (`decode`) and the table written first, in one pass over the
    records (with filters that name tables, the alerts that pass one at least are kept in
    memory from that pass, then each table written from them), which also counts the
    quarantined, filtered and kept records, notes where the
    quarantined ones are (topic, partition, offset) and why, and picks the console's lines
    (Spark's `observe`). The quarantine is then written only when that pass counted some,
    from those records alone, decoding nothing again: the live job's few are fetched back
    from Kafka and appended beside the stream (`pending_quarantine`, `fink_spark.sink.quarantine`); otherwise
    the batch is read again (reprocessing's batches come decoded by their sources, and are
    decoded again whole). The rejected ids
    are written when the filters rejected some, from the batch decoded again. Each batch id
    is committed in every output either way so that their logs stay complete; after a
    crash, a replayed batch writes only what the crash left unwritten.
    """

    survey: Survey
    decode: Callable[[DataFrame], DataFrame] | None  # None: the batches come decoded
    kept: Callable[..., DataFrame]  # decoded records -> the alerts that pass (`run.pipeline.kept_alerts`)
    quarantined: Callable[[DataFrame], DataFrame]
    tables: dict[str, Sink]  # the alerts' tables by name (none: another query writes them, a Parquet table's de-duplication)
    quarantine: Sink
    rejected: tuple[Sink, Callable[[DataFrame], DataFrame]] | None = None
    console: ConsoleOutput | None = None
    out: TextIO | None = None
    # Writes the few quarantined records of a minute's batches by their positions, beside the
    # stream (the live job's); None: the quarantine is written from the batch, read again.
    pending_quarantine: PendingQuarantine | None = None
    totals: BatchCounts = field(default_factory=BatchCounts)
    filters: tuple[Filter, ...] = ()  # in order: each batch counts the alerts each one rejected, and where one raised
    # Writes down what each batch read and what became of it (the live job's ledger), after its
    # outputs; a batch replayed after a restart is counted again for it, writing nothing
    record_batch: Callable[[int, dict[str, Any]], None] | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        try:
            self._write_all(batch, batch_id)
        except Exception as error:
            stopped = QueryStoppedError.of(error)
            if stopped is None:
                raise
            raise stopped from None

    def _write_all(self, batch: DataFrame, batch_id: int) -> None:
        decoded = batch.transform(self.decode) if self.decode is not None else batch
        counts = self._write_table(decoded, batch_id)
        self.totals.add(batch_id, counts)
        self._write_quarantine(batch, decoded, batch_id, counts)
        if self.rejected is not None:
            sink, rejections = self.rejected
            self._write_side(sink, rejections, lambda: decoded, batch_id, _none(counts, "filtered"))
        if counts is not None and self.filters and counts["records"]:
            log.info("batch %d yields: %s", batch_id, yields_text(counts["yields"]))
        if self.record_batch is not None:
            self.record_batch(batch_id, counts if counts is not None else self._counted_again(decoded))
        if self.console is not None:
            print_batch(self.out or sys.stdout, self.survey, batch_id, counts)

    def _write_quarantine(self, batch: DataFrame, decoded: DataFrame, batch_id: int, counts: dict[str, Any] | None) -> None:
        """Hand a batch's few quarantined records to `pending_quarantine`, and a batch with none while
        `pending_quarantine` holds some (a sink's batches go in order); write any other batch's quarantine
        now, after those gathered before it."""
        if self.pending_quarantine is not None and self.decode is not None and counts is not None:
            count, size = counts["quarantined"], counts["quarantined_bytes"]
            if (count and self.pending_quarantine.can_take(count, size)) or (not count and self.pending_quarantine.busy()):
                self.pending_quarantine.submit(batch_id, _reasons(counts), size)
                return
        if self.pending_quarantine is not None:
            self.pending_quarantine.write_now()
        self._write_side(self.quarantine, self.quarantined, lambda: self._quarantined_again(batch, decoded, counts),
                         batch_id, _none(counts, "quarantined"))

    def _quarantined_again(self, batch: DataFrame, decoded: DataFrame, counts: dict[str, Any] | None) -> DataFrame:
        """The records to write the quarantine from. Where the batches come raw: only the
        quarantined ones, joined from the batch read again with the reasons the table's pass
        found, so that nothing is decoded again. Where they come decoded (reprocessing): the
        whole batch, decoded again."""
        if counts is None or not counts["quarantined"]:
            return decoded
        if self.decode is None:  # decoded again whole; the alerts a filter raised on marked by their positions
            if not counts["failed"]:
                return decoded
            failed = batch.sparkSession.createDataFrame(
                [(row["topic"], row["partition"], row["offset"], row["reject_reason"]) for row in counts["failed"]],
                "topic string, partition int, offset long, failed_reason string")
            return (decoded.join(F.broadcast(failed), ["topic", "partition", "offset"], "left")
                    .withColumn("reject_reason", F.coalesce("reject_reason", "failed_reason")).drop("failed_reason"))
        found = batch.sparkSession.createDataFrame([(*position, reason) for position, reason in _reasons(counts).items()],
                                                   "topic string, partition int, offset long, reject_reason string")
        return batch.join(F.broadcast(found), ["topic", "partition", "offset"])

    def _write_table(self, decoded: DataFrame, batch_id: int) -> dict[str, Any] | None:
        """Write the kept alerts; returns the batch's counts, the quarantined records'
        positions and reasons, and the console lines (None for a batch every table committed
        before a restart, whose records are not read again). With a table per filter, the
        alerts that go to one at least are kept in memory by the pass that counts them, and
        each table that lacks the batch is written from them."""
        plan = next(iter(self.tables.values())).metrics() if self.tables else PlanMetrics()
        kept = self._counted(decoded, plan, self.console)
        unwritten = {name: sink for name, sink in self.tables.items() if not sink.has(batch_id)}
        if self.tables and not unwritten:
            return None
        if not unwritten:  # the table is written by another query (a Parquet table's de-duplication): count here
            run_plan(kept)
            return self._counts(plan, kept)
        if not tables_of(self.filters):
            (sink,) = unwritten.values()
            sink.write(batch_id, kept)
            return self._counts(plan, kept)
        kept = kept.persist()
        try:
            kept.count()  # the one pass over the batch: decoded, judged by every filter, counted
            by_table = split_by_table(kept, self.filters)
            for name, sink in unwritten.items():
                sink.write(batch_id, by_table[name])
            return self._counts(plan, kept)
        finally:
            kept.unpersist()

    def _counted_again(self, decoded: DataFrame) -> dict[str, Any]:
        """The counts of a batch the table had before a restart, for the ledger: its records
        decoded and filtered again, nothing written."""
        plan = PlanMetrics()
        kept = self._counted(decoded, plan, None)
        run_plan(kept)
        return self._counts(plan, kept)

    def _counted(self, decoded: DataFrame, plan: PlanMetrics, console: ConsoleOutput | None) -> DataFrame:
        """The kept alerts, counting on the way the records, the quarantined (their positions and
        reasons), the kept and, with a console, its first lines."""
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
        def passed(alerts: DataFrame, index: int) -> DataFrame:
            return plan.observe(alerts, f"passed_{index}", F.count(F.lit(1)).alias("passed"))

        def failed(alerts: DataFrame, item: Filter) -> DataFrame:
            error = F.col(f"`{item.scratch}`.error")
            position = F.struct("topic", F.col("kafka_partition").alias("partition"), F.col("kafka_offset").alias("offset"),
                                F.concat(F.lit(f"{item.label} raised "), error).alias("reject_reason"))
            return plan.observe(alerts, f"failed{item.scratch}", F.count_if(error.isNotNull()).alias("failed"),
                                F.collect_list(F.when(error.isNotNull(), position)).alias("positions"))

        kept = records.transform(self.kept, passed if counted_after(self.filters) else None,
                                 failed if any(item.scratch for item in self.filters) else None)
        kept_metrics = [F.count(F.lit(1)).alias("kept"),
                        *(F.count_if(route_column(table)).alias(route_column(table)) for table in tables_of(self.filters))]
        if console is not None:
            kept_metrics.append(first_lines(kept, self.survey, console.rows).alias("lines"))
        return plan.observe(kept, "kept", *kept_metrics)

    def _counts(self, plan: PlanMetrics, kept: DataFrame) -> dict[str, Any]:
        """The batch's counts, with the alerts each filter rejected (those that passed the ones
        before it); the alerts of a Python filter that raised are quarantined, by their
        positions, with its error (those of reprocessed files, which have none, are rejected)."""
        metrics = plan.collected(kept)
        counts = {**metrics["records"], **metrics["kept"]}
        tables = tables_of(self.filters)
        shared = [item for item in self.filters if item.table is None]
        # the alerts that reached each filter without a table, those that passed them all, then those kept
        reached = [counts["records"] - counts["quarantined"],
                   *(metrics[f"passed_{index}"]["passed"] for index in counted_after(self.filters)), counts["kept"]]
        counts["rejected_by"] = {item.label: reached[index] - reached[index + 1] for index, item in enumerate(shared)}
        # each filter's yield: the alerts it passed of those that reached it (after the filters before it)
        counts["yields"] = {item.label: [reached[index], reached[index + 1]] for index, item in enumerate(shared)}
        if tables:  # each table's filter judges the alerts that passed the others: those it passed are its table's
            counts["rejected_by"][no_table_label(self.filters)] = reached[-2] - reached[-1]
            counts["yields"].update({item.label: [reached[-2], counts.pop(route_column(item.table))]
                                     for item in self.filters if item.table is not None})
        counts["failed"] = []  # the positions of the alerts a filter raised on, and why
        for item in (item for item in self.filters if item.scratch):
            failures = metrics[f"failed{item.scratch}"]
            placed = [position for position in failures["positions"] if position["offset"] is not None]
            where = {(position["topic"], position["partition"], position["offset"]) for position in counts["failed"]}
            new = [position for position in placed  # an alert two tables' functions raised on: quarantined once
                   if (position["topic"], position["partition"], position["offset"]) not in where]
            counts["rejected_by"][no_table_label(self.filters) if item.table else item.label] -= len(new)
            counts["failed"] += new
            if failures["failed"]:
                log.warning("%s raised on %d alerts of the micro-batch (%s): %s", item.label, failures["failed"],
                            failures["positions"][0]["reject_reason"].removeprefix(f"{item.label} raised "),
                            "they go to the quarantine" if len(placed) == failures["failed"] else
                            f"{failures['failed'] - len(placed)} of them, reprocessed from files, have no Kafka position "
                            "to be quarantined by: they are counted as rejected; reprocess those files once it is fixed")
        counts["quarantined"] += len(counts["failed"])
        counts["positions"] = counts["positions"] + counts["failed"]
        counts["filtered"] = counts["records"] - counts["quarantined"] - counts["kept"]
        return counts

    @staticmethod
    def _write_side(sink: Sink, select: Callable[[DataFrame], DataFrame], records: Callable[[], DataFrame], batch_id: int,
                    none: bool) -> None:
        """Write one side output; its records are read again (`records()`) only if it lacks the
        batch and the batch's counts do not say it has `none`."""
        if none:
            sink.write_nothing(batch_id)  # without reading the records again
        elif not sink.has(batch_id):
            sink.write(batch_id, records().transform(select))


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


def _none(counts: dict[str, Any] | None, count: str) -> bool:
    """Whether the batch's counts (None: not read, a batch committed before a restart) say
    it has no `count` records."""
    return counts is not None and counts[count] == 0
