"""Alerts as aligned text lines in the terminal, as Fink's tutorial shows them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StructType

from fink_spark.surveys import Survey


def console_values(survey: Survey, schema: StructType) -> list[Column]:
    """The survey's console columns as strings named by their labels (null where the
    table's schema lacks the column)."""
    return [
        (F.expr(expression) if has_column(schema, column) else F.lit(None)).cast("string").alias(label)
        for label, expression, column in survey.console_columns
    ]


def console_columns(survey: Survey) -> Callable[[DataFrame], DataFrame]:
    """Alerts -> the survey's console columns, as strings, in Kafka order."""

    def transform(alerts: DataFrame) -> DataFrame:
        ordered = alerts.orderBy("topic", "kafka_partition", "kafka_offset")
        return ordered.select(*console_values(survey, alerts.schema))

    return transform


def has_column(schema: StructType, path: str) -> bool:
    """Whether a (dotted) column exists: older schemas lack some of Fink's fields."""
    data_type: DataType = schema
    for name in path.split("."):
        if not isinstance(data_type, StructType) or name not in data_type.names:
            return False
        data_type = data_type[name].dataType
    return True


def format_table(labels: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A header line and one line per row, columns aligned and separated by ' | '."""
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    widths = [max([len(label), *[len(row[i]) for row in cells]]) for i, label in enumerate(labels)]
    lines = [" | ".join(label.ljust(width) for label, width in zip(labels, widths)).rstrip()]
    lines += [" | ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    return lines


def batch_header(batch_id: int, alerts: int, quarantined: int, shown: int, rejected: int = 0) -> str:
    """E.g. '--- batch 3: 12 alerts, 0 quarantined ---' (with filters: ', 5 rejected by filters')."""
    more = f", showing {shown}" if shown < alerts else ""
    filtered = f", {rejected} rejected by filters" if rejected else ""
    return f"--- batch {batch_id}: {alerts} alert{'s' if alerts != 1 else ''}{more}{filtered}, {quarantined} quarantined ---"
