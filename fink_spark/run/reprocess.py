"""Reprocessing saved streams with the live job's decoding, filters and layout.

The inputs (`run.inputs`) are read by Spark streaming sources with "available now" and a
checkpoint, so that a rerun over the same input adds nothing and an interrupted run
resumes where it stopped, each alert landing once.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, replace
from functools import reduce

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming.listener import StreamingQueryProgress

from fink_spark.config.job import PARQUET as PARQUET_TABLE
from fink_spark.config.job import JobConfig, TriggerConfig
from fink_spark.run.inputs import FILES_PER_BATCH, KafkaRange, plan_inputs, read_input, read_kafka_range
from fink_spark.run.ledger import Ledger
from fink_spark.run.pipeline import (
    check_filters_at_start,
    kept_alerts,
    learn_schema_at,
    quiet_planned_stops,
    start_pipeline,
)
from fink_spark.run.progress import BatchProgress
from fink_spark.schema.writer import WriterSchemas
from fink_spark.sink.outputs import BatchCounts
from fink_spark.state import REPROCESS_QUERY, CheckpointFiles

log = logging.getLogger(__name__)

class _Progress(BatchProgress):
    """Files and alerts done, rate and time left, one line per micro-batch."""

    def __init__(self, total_files: int | None, files_per_batch: int, counts: BatchCounts) -> None:
        super().__init__()
        self.total_files = total_files
        self.files_per_batch = files_per_batch
        self.counts = counts  # the outputs' counts over all batches (alerts written, quarantined)
        self.records = 0
        self.started = time.monotonic()

    def on_batch(self, progress: StreamingQueryProgress) -> None:
        self.records += progress.numInputRows
        elapsed = time.monotonic() - self.started
        files = min((progress.batchId + 1) * self.files_per_batch, self.total_files or 0)
        line = f"reprocess: batch {progress.batchId}, {self.records} inputs read"
        if self.counts.batch >= 0:
            written = self.counts.kept
            line += f", {written} alerts written ({written / elapsed:.0f}/s), {self.counts.quarantined} quarantined"
        if self.total_files:
            rate = files / elapsed
            left = (self.total_files - files) / rate if rate else 0
            line += f", files {files}/{self.total_files}, {rate:.0f} files/s, about {left:.0f} s left"
        log.info(line)


def reprocess(
    spark: SparkSession, config: JobConfig, inputs: list[str], kafka_ranges: list[KafkaRange], topic: str,
    count_only: bool = False, files_per_batch: int = FILES_PER_BATCH, query: str = REPROCESS_QUERY,
) -> int:
    """Decode, filter and write (or only count) the inputs; returns how many alerts passed.

    Parameters
    ----------
    spark
        The session.
    config
        The job's configuration; reprocessing always runs as "available now".
    inputs
        Folders, files or globs of saved alerts (Avro, Avro containers, Parquet).
    kafka_ranges
        Topics' offset ranges to read again from the broker.
    topic
        The topic the saved alerts' rows are written under.
    count_only
        Count the alerts that pass the filters, and write nothing.
    files_per_batch
        Files a micro-batch at most.
    query
        The query's name, its folder in the checkpoint (`fink-spark audit --repair` gives each
        repair its own). A finished run is written down in the job's ledger, for `fink-spark audit`.
    """
    output = config.output
    if output.deduplicate_gap and output.format == PARQUET_TABLE:  # its state would hold the last copies back until a next run
        log.warning("output.table.deduplicate of a Parquet table applies to the live stream: reprocessing writes every "
                    "copy of an alert (an Iceberg table merges them)")
        output = replace(output, deduplicate_gap=None)
    config = replace(config, trigger=TriggerConfig(processing_time=None, available_now=True), output=output)
    inputs_plan = plan_inputs(spark, config, inputs, kafka_ranges, CheckpointFiles.at(output.checkpoint))
    kinds, files, writers, table = inputs_plan.kinds, inputs_plan.files, inputs_plan.writers, inputs_plan.table
    counts = [None if "://" in path else len(files[path]) for path in inputs]
    total_files = None if None in counts or kafka_ranges else sum(counts)  # type: ignore[arg-type]
    totals = BatchCounts()
    progress = _Progress(total_files, files_per_batch, totals)
    with quiet_planned_stops():
        while True:  # once, or again after a Kafka range met a writer schema it had not
            def read(_: str) -> DataFrame:
                """The inputs' decoded records, as one stream (a Parquet sink folder takes one writer)."""
                sources = [read_input(spark, path, kind, config, writers, table, topic, files_per_batch)
                           for path, kind in kinds.items()]
                sources += [read_kafka_range(spark, config, span, writers, table) for span in kafka_ranges]
                return reduce(DataFrame.unionByName, sources)

            try:
                if count_only:
                    return _count(read(REPROCESS_QUERY), config, writers, progress)
                # the sources decode their records (saved tables hold them decoded)
                queries = start_pipeline(spark, read, None, config, writers, table, totals, query)
                progress.wait_for(queries)
                break
            except StreamingQueryException as error:
                if not learn_schema_at([str(error)], config.kafka, writers, table):
                    raise
    Ledger(CheckpointFiles.at(output.checkpoint), query).record_run(
        inputs, [span for kafka_range in kafka_ranges for span in kafka_range.ledger_ranges()], asdict(totals))
    if totals.quarantined:
        where = output.quarantine if output.format == PARQUET_TABLE else "the quarantine table"
        log.warning("%d records could not be read or decoded: see %s", totals.quarantined, where)
    return totals.kept


def _count(records: DataFrame, config: JobConfig, writers: WriterSchemas, progress: BatchProgress) -> int:
    """Count what passes, writing nothing (a throw-away checkpoint: every run counts everything)."""
    check_filters_at_start(config.filters, records, config.survey, writers)
    table = records.transform(kept_alerts(config.survey, config.filters))
    counted: list[int] = []
    with tempfile.TemporaryDirectory(prefix="fink-spark-count-") as checkpoint:
        query = (
            table.writeStream.foreachBatch(lambda batch, _: counted.append(batch.count()))
            .option("checkpointLocation", checkpoint).trigger(availableNow=True).start()
        )
        progress.wait_for([query])
    return sum(counted)


