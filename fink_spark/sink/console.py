"""The console view of a micro-batch: its counts and its first kept alerts in Kafka order,
whose values are gathered while the table is written (`first_lines`, an `observe` aggregate)."""

from __future__ import annotations

from typing import Any, TextIO

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from fink_spark.display import batch_header, format_table
from fink_spark.surveys import Survey
from fink_spark.transform.decode import has_column


def first_lines(kept: DataFrame, survey: Survey, rows: int) -> Column:
    """The console lines of the first `rows` kept alerts in Kafka order, as an aggregate
    that `observe` computes while the table is written (a few short strings per alert)."""
    ordered = F.struct(
        F.col("topic").alias("~topic"), F.col("kafka_partition").alias("~partition"),
        F.col("kafka_offset").alias("~offset"), *console_values(survey, kept.schema),
    )
    return F.slice(F.array_sort(F.collect_list(ordered)), 1, rows)


def console_values(survey: Survey, schema: StructType) -> list[Column]:
    """The raw values of the survey's console columns, named by their labels (null where
    the table's schema lacks the column); `Survey.console_cells` formats them."""
    return [
        (F.col(column.column) if has_column(schema, column.column) else F.lit(None)).alias(column.label)
        for column in survey.console_columns
    ]


def print_batch(out: TextIO, survey: Survey, batch_id: int, counts: dict[str, Any] | None) -> None:
    """A micro-batch's console view: its counts and first kept alerts (`counts` None: a
    batch written before a restart, whose records are not read again)."""
    if counts is None:
        lines = [f"--- batch {batch_id}: written before the restart, not shown again ---"]
    elif counts["records"] == 0:
        return
    else:
        labels = [column.label for column in survey.console_columns]
        rows = [survey.console_cells(line) for line in counts["lines"]]
        lines = [batch_header(batch_id, counts["kept"], counts["quarantined"], len(rows), rejected=counts["filtered"])]
        if rows:
            lines += format_table(labels, rows)
    out.write("\n".join(lines) + "\n")
    out.flush()
