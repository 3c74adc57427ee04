"""One alert once: Fink sends an alert that passes several filters once per topic. A stream's
copies are merged within a session window (`deduplicate`), or a batch's copies merged
before an Iceberg MERGE INTO (`merge_copies`); the merged row lists every topic."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fink_spark.surveys import Survey
from fink_spark.transform.decode import INGEST_TIME


def deduplicate(survey: Survey, gap: str) -> Callable[[DataFrame], DataFrame]:
    """A stream of alerts -> one row per alert id with `topics`, the sorted list of topics it came in.

    Copies of an alert that reach Kafka within `gap` of each other are merged (a session
    window per id, on the Kafka timestamp). A row is written once the stream has moved
    `gap` past the alert's last copy, and the state is dropped then: it holds at most
    `gap` of alerts, however long the job runs. (A Parquet table's way: an Iceberg table
    merges each micro-batch's copies into its rows instead, `merge_copies`.)
    """
    return lambda alerts: _copies_merged(survey, alerts.withWatermark("kafka_timestamp", gap),
                                         F.session_window("kafka_timestamp", gap))


def merge_copies(survey: Survey) -> Callable[[DataFrame], DataFrame]:
    """The alerts of one micro-batch -> one row per alert id with `topics`, the sorted list
    of topics it came in (`iceberg.IcebergMerges` then merges these rows into the table's)."""
    return lambda alerts: _copies_merged(survey, alerts)


def _copies_merged(survey: Survey, alerts: DataFrame, *window: Column) -> DataFrame:
    """One row per alert id (and window): the first copy's fields, the copies' topics, the
    earliest Kafka timestamp; the topic, partition and offset of each copy are dropped.
    The rows stay partitioned by the id, which a MERGE on it then needs no shuffle for."""
    per_topic = {"topic", "kafka_partition", "kafka_offset", "kafka_timestamp", "ingest_time"}
    alert_id = survey.id_column
    fields = [name for name in alerts.columns if name not in per_topic and name != alert_id]
    merged = alerts.groupBy(alert_id, *window).agg(
        F.first(F.struct(*[F.col(f"`{name}`") for name in fields])).alias("_alert"),
        F.sort_array(F.collect_set("topic")).alias("topics"),
        F.min("kafka_timestamp").alias("kafka_timestamp"),
    )
    columns = [F.col(alert_id) if name == alert_id else F.col(f"_alert.`{name}`") for name in alerts.columns
               if name not in per_topic]
    return merged.select(*columns, "topics", "kafka_timestamp", F.expr(INGEST_TIME).alias("ingest_time"))
