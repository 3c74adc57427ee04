"""Where decoded alerts go: checkpointed Parquet (exactly once), the quarantine, the console."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from fink_spark.config import ConsoleOutput, TriggerConfig
from fink_spark.display import batch_header, console_columns, format_table
from fink_spark.surveys import Survey


def trigger_options(trigger: TriggerConfig) -> dict[str, Any]:
    if trigger.available_now:
        return {"availableNow": True}
    return {"processingTime": trigger.processing_time}


def parquet_query(
    frame: DataFrame, path: str, checkpoint: str, partition_by: tuple[str, ...],
    trigger: TriggerConfig, name: str, compression: str = "zstd",
) -> StreamingQuery:
    """Append a stream to a Parquet folder; the checkpoint and the sink's metadata log
    make each record land exactly once, across restarts and crashes."""
    writer = frame.writeStream.format("parquet").queryName(name).outputMode("append").option("compression", compression)
    writer = writer.option("checkpointLocation", checkpoint).trigger(**trigger_options(trigger))
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    return writer.start(path)


def console_query(
    decoded: DataFrame, survey: Survey, kept: Callable[[DataFrame], DataFrame], console: ConsoleOutput,
    checkpoint: str, trigger: TriggerConfig, out: TextIO | None = None,
) -> StreamingQuery:
    """Print each micro-batch: a header with its counts, then one aligned line per kept alert."""

    def show(batch: DataFrame, batch_id: int) -> None:
        batch = batch.persist()
        try:
            counts = {
                row["good"]: row["count"]
                for row in batch.groupBy(F.col("reject_reason").isNull().alias("good")).count().collect()
            }
            good, bad = counts.get(True, 0), counts.get(False, 0)
            if good == 0 and bad == 0:
                return
            passed = batch.transform(kept)
            passing = passed.count()
            rows = passed.transform(console_columns(survey)).limit(console.rows).collect()
            labels = [label for label, _, _ in survey.console_columns]
            lines = [batch_header(batch_id, passing, bad, len(rows), rejected=good - passing)]
            if rows:
                lines += format_table(labels, rows)
            stream = out or sys.stdout
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        finally:
            batch.unpersist()

    writer = decoded.writeStream.queryName("console").foreachBatch(show)
    writer = writer.option("checkpointLocation", checkpoint).trigger(**trigger_options(trigger))
    return writer.start()
