"""Where decoded alerts go: the table (Iceberg, or plain Parquet), exactly once, the
quarantine, the rejected ids and the console.

Every output is a `Sink`: written batch by batch from inside `foreachBatch`, it knows the
batches it committed (`has`), so that a batch replayed after a crash adds nothing twice.
The kinds of table are chosen by `output.format` through `SINK_KINDS`:

- `iceberg`: appends tagged with the query and batch id, or merges for a de-duplicated
  table (`fink_spark.sink.iceberg`);
- `parquet`: Spark's own streaming file sink (`fink_spark.sink.parquet`).

One micro-batch feeds them all (`fink_spark.sink.outputs.MicroBatchOutputs`), read from
Kafka and decoded once; the live job's few quarantined records are appended beside the
stream (`fink_spark.sink.quarantine`); the console's lines (`fink_spark.sink.console`) and
counts are metrics gathered while the table is written (`fink_spark.sink.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from fink_spark.config.job import ICEBERG, PARQUET, TableOutput
from fink_spark.errors import ConfigError
from fink_spark.sink.iceberg import open_iceberg_sinks
from fink_spark.sink.metrics import PlanMetrics
from fink_spark.sink.parquet import open_parquet_sinks
from fink_spark.surveys import Survey
from fink_spark.table.warehouse import QUARANTINE, REJECTED


class Sink(Protocol):
    """One output written batch by batch from inside `foreachBatch`, exactly once."""

    def has(self, batch_id: int) -> bool: ...

    def write(self, batch_id: int, frame: DataFrame) -> None: ...

    def write_nothing(self, batch_id: int) -> None: ...

    def metrics(self) -> PlanMetrics:
        """How the metrics of a batch this sink writes are read back."""
        ...


# output.format -> the sinks of a job's outputs (by output name: alerts, quarantine, rejected),
# made ready for frames of the given columns: (spark, output, survey, writer, columns, changes)
SinkKind = Callable[[SparkSession, TableOutput, Survey, str, dict[str, StructType], str | None], dict[str, Sink]]
SINK_KINDS: dict[str, SinkKind] = {ICEBERG: open_iceberg_sinks, PARQUET: open_parquet_sinks}


@dataclass(frozen=True)
class Sinks:
    """A job's outputs: the tables of the alerts kept, by name (`alerts`, or one per filter that
    names one; none when another query writes the table: a Parquet table's de-duplication),
    the quarantine and the rejected ids."""

    tables: dict[str, Sink]
    quarantine: Sink
    rejected: Sink | None


def open_sinks(spark: SparkSession, output: TableOutput, survey: Survey, writer: str, columns: dict[str, StructType],
               changes: str | None = None, own_table: bool = True) -> Sinks:
    """The sinks of a job's outputs, made ready for frames of `columns` (by output name:
    the alerts' tables, quarantine, rejected). Iceberg tables are created, or evolved to the columns,
    now: before the query starts, a schema change is committed on its own.

    Parameters
    ----------
    spark
        The session.
    output
        The table's configuration; its format picks the sinks from `SINK_KINDS`.
    survey
        Whose alerts: partitions, id column.
    writer
        Who writes (the query's checkpoint), the tag of each committed batch.
    columns
        Each output's columns: the alerts' tables' first, then the quarantine's and the rejected ids'.
    changes
        The schema change these columns make, if any, recorded with its own commit.
    own_table
        False where another query writes the alerts (a Parquet table's de-duplication).
    """
    alerts = [name for name in columns if name not in (QUARANTINE, REJECTED)]
    missing = [column for column in output.partition_by if column in survey.class_partitions
               and column not in columns[alerts[0]].names]
    if missing:
        others = ", ".join(column for column in output.partition_by if column not in missing) or "topic"
        raise ConfigError(f"'output.table.partition_by' names {missing[0]}, which these alerts do not have (their "
                          f"writer schema predates it): partition by {others} instead, or give a reader schema that "
                          "has it ('schema').")
    sinks = SINK_KINDS[output.format](spark, output, survey, writer, columns, changes)
    return Sinks({name: sinks[name] for name in alerts} if own_table else {}, sinks[QUARANTINE], sinks.get(REJECTED))
