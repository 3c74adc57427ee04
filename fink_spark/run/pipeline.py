"""The job's pipeline, the live stream's and reprocessing's alike: read, decode, check,
filter and shape, write (`start_pipeline`); the table's schema at the start, and the
writer schema learned when a query stops at one it had not met."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from fink_spark.config.job import PARQUET, JobConfig, KafkaConfig
from fink_spark.kafka.client import key_at
from fink_spark.run.ledger import Ledger
from fink_spark.schema.table import TableSchema, save_table_schema
from fink_spark.schema.writer import WriterSchemas, load_schema_text
from fink_spark.sink import open_sinks
from fink_spark.sink.outputs import BatchCounts, MicroBatchOutputs, QueryStoppedError
from fink_spark.sink.parquet import table_query
from fink_spark.sink.quarantine import PendingQuarantine
from fink_spark.state import DEDUPLICATION_QUERY, TABLE_SCHEMA, CheckpointFiles
from fink_spark.surveys import Survey
from fink_spark.table.warehouse import ALERTS, QUARANTINE, REJECTED
from fink_spark.transform.decode import UNKNOWN_SCHEMA, flatten_alerts, quarantined
from fink_spark.transform.dedup import deduplicate, merge_copies
from fink_spark.transform.filters import (
    Filter,
    apply_filters,
    check_filters,
    columns_lacking,
    first_rejection,
    split_by_table,
)

log = logging.getLogger(__name__)

# A micro-batch stopped at a writer schema not met yet says where, in its error's text:
# the position is known only inside the task that met it (`decode._reject_reason`).
_WHERE = re.compile(UNKNOWN_SCHEMA + r" \(topic (?P<topic>.+?), partition (?P<partition>\d+), offset (?P<offset>\d+)\)")


def kept_alerts(survey: Survey, filters: tuple[Filter, ...]) -> Callable[..., DataFrame]:
    """Decoded records -> the alerts that pass the filters: what the sinks see (`passed`,
    `failed`: as `apply_filters`'s)."""
    return lambda decoded, passed=None, failed=None: (decoded.transform(flatten_alerts(survey))
                                                      .transform(apply_filters(filters), passed, failed))


def start_pipeline(spark: SparkSession, read: Callable[[str], DataFrame], decode: Callable[[DataFrame], DataFrame] | None,
                   config: JobConfig, writers: WriterSchemas, table: TableSchema, totals: BatchCounts,
                   name: str, out: TextIO | None = None,
                   pending_quarantine: PendingQuarantine | None = None, ledger: bool = False) -> list[StreamingQuery]:
    """Start the job's queries, the live stream's and reprocessing's alike.

    `read(name)` gives the records as a stream (Kafka's, or the inputs'), `decode` turns
    them into alerts and reasons to quarantine (None: `read` decodes them). The filters are
    checked against the alerts' columns, the outputs made ready for them, then one query,
    `name`, feeds every output from each micro-batch (`MicroBatchOutputs`; `pending_quarantine` writes a
    batch's few quarantined records by their positions beside the stream, first those a stop
    left unwritten). With de-duplication, an Iceberg table merges each batch's copies into
    its rows (`iceberg.IcebergMerges`); a Parquet table, whose files cannot change, is
    written by a second query, `deduplicated`, which merges copies in Spark's
    streaming state before it writes them.

    Parameters
    ----------
    spark
        The session.
    read
        A query's name to its stream of records.
    decode
        Records to decoded alerts with their quarantine reasons; None where `read` decodes.
    config
        The job's configuration: survey, filters, outputs, trigger.
    writers, table
        The writer schemas known so far and the table's schema, which the alerts follow.
    totals
        The run's counts, added to by every micro-batch.
    name
        The main query's name (its checkpoint's folder).
    out
        Where the console view prints (None: no console).
    pending_quarantine
        Quarantined records to append beside the stream (the live job's; None: appended
        with their batch).
    ledger
        Write down what each batch read from Kafka and kept (`fink_spark.run.ledger`; the live job's).
    """
    survey, output = config.survey, config.output
    checkpoint = output.checkpoint.rstrip("/")
    records = read(name)
    decode_all = decode or (lambda frame: frame)
    decoded = records.transform(decode_all)
    check_filters_at_start(config.filters, decoded, survey, writers)
    kept = kept_alerts(survey, config.filters)
    gap = output.deduplicate_gap
    deduplicated = (read(DEDUPLICATION_QUERY).transform(decode_all).transform(kept).transform(deduplicate(survey, gap))
                    if gap and output.format == PARQUET else None)
    alerts = deduplicated if deduplicated is not None else decoded.transform(kept)
    if gap and deduplicated is None:
        alerts = alerts.transform(merge_copies(survey))  # the merged table's columns
    rejections = (lambda batch: batch.transform(flatten_alerts(survey)).transform(first_rejection(config.filters, survey))) \
        if output.rejected else None
    # the alerts' tables: one, or one per filter that names one, which each hold the same columns
    columns = {name: frame.schema for name, frame in (split_by_table(alerts, config.filters) or {ALERTS: alerts}).items()}
    columns[QUARANTINE] = decoded.transform(quarantined).schema
    if rejections is not None:
        columns[REJECTED] = decoded.transform(rejections).schema
    changes = save_table_schema(table, next(iter(columns.values())), CheckpointFiles.at(checkpoint), output.schema_folder)
    sinks = open_sinks(spark, output, survey, f"{checkpoint}/{name}", columns, changes, own_table=deduplicated is None)
    if pending_quarantine is not None:
        pending_quarantine.open(sinks.quarantine, quarantined)
    outputs = MicroBatchOutputs(
        survey=survey, decode=decode, kept=kept, quarantined=quarantined, tables=sinks.tables, quarantine=sinks.quarantine,
        filters=config.filters,
        rejected=(sinks.rejected, rejections) if sinks.rejected is not None and rejections is not None else None,
        console=config.console if config.console.enabled else None, out=out, totals=totals, pending_quarantine=pending_quarantine,
        record_batch=Ledger(CheckpointFiles.at(checkpoint), name).record if ledger else None,
    )
    others = [table_query(deduplicated, output, f"{checkpoint}/{DEDUPLICATION_QUERY}", config.trigger, DEDUPLICATION_QUERY)] \
        if deduplicated is not None else []
    writer = records.writeStream.queryName(name).foreachBatch(outputs).option("checkpointLocation", f"{checkpoint}/{name}")
    return [writer.trigger(**config.trigger.spark_options()).start(), *others]


def check_filters_at_start(filters: tuple[Filter, ...], records: DataFrame, survey: Survey, writers: WriterSchemas) -> None:
    """Check the filters against the alerts' columns (an error for a filter that cannot run),
    then against each writer schema known: a warning names the filters whose columns a
    writer lacks, since they reject every record of that schema (flat records, older schemas)."""
    alerts = records.transform(flatten_alerts(survey))
    check_filters(filters, alerts)
    for source, writer in writers.described().items():
        for item, missing in columns_lacking(filters, alerts, writer):
            log.warning("%s names %s, which %s lacks: it rejects all of that schema's records", item.label,
                        ", ".join(missing), source)


def starting_table_schema(config: JobConfig, state: CheckpointFiles, writers: WriterSchemas, newest_keys: list[bytes]) -> TableSchema:
    """The output table's schema: the one this checkpoint has built so far; for a new
    checkpoint, the configured schema, else the writer schema of the topics' newest
    message (the richest, when they differ), else the newest bundled one. Every writer
    schema known is then merged in (a no-op for those merged before)."""
    saved = state.read(TABLE_SCHEMA)
    if saved is not None:
        table = TableSchema.from_json(saved)
    else:
        start = load_schema_text(config.schema) if config.schema else None
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
    """Drops py4j's traceback of a micro-batch stopped at a new writer schema (the job logs
    one line for it) or cut short by its query's stop."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or not (UNKNOWN_SCHEMA in str(error) or isinstance(error, QueryStoppedError))


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
