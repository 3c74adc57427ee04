"""fink-spark from Python: the job's decoded and filtered alerts as DataFrames, for notebooks
and your own Spark jobs. The transformations are the job's own, so a DataFrame here has
the columns of the job's Parquet table."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from fink_spark.config.job import JobConfig, load_config, parse_config
from fink_spark.kafka.source import read_stream
from fink_spark.run.inputs import RECORD_COLUMNS, plan_inputs, read_input
from fink_spark.run.pipeline import kept_alerts
from fink_spark.run.stream import prepare_stream
from fink_spark.state import STREAM_QUERY, CheckpointFiles
from fink_spark.surveys import get_survey
from fink_spark.transform.decode import decode_records
from fink_spark.transform.filters import apply_filters as filters_applied
from fink_spark.transform.filters import parse_filters

ConfigLike = str | Path | Mapping[str, Any] | JobConfig


def job_config(config: ConfigLike, kafka_required: bool = True) -> JobConfig:
    """A configuration from a YAML file's path, a dict of the same keys, or a JobConfig. A
    dict for reading only may leave out `output` (nothing is written)."""
    if isinstance(config, JobConfig):
        return config
    if isinstance(config, Mapping):
        data = dict(config)
        if "output" not in data and not kafka_required:
            nowhere = tempfile.mkdtemp(prefix="fink-spark-")
            data["output"] = {"format": "parquet", "table": {"path": f"{nowhere}/alerts", "checkpoint": f"{nowhere}/checkpoint"}}
        return parse_config(data, kafka_required=kafka_required)
    return load_config(config, kafka_required=kafka_required)


def read_alerts(spark: SparkSession, config: ConfigLike) -> DataFrame:
    """The streaming DataFrame of the configured topics' alerts, decoded and filtered.

    It decodes the writer schemas known when it is made (those of the topics' newest
    messages and those the checkpoint has met). A message keyed by another schema stops
    the query with FINK_SPARK_UNKNOWN_WRITER_SCHEMA: call read_alerts again, and the new
    schema is known (`fink-spark stream` does this by itself).
    """
    plan = prepare_stream(job_config(config))
    survey, kafka = plan.config.survey, plan.config.kafka
    records = read_stream(spark, kafka, STREAM_QUERY, spark.sparkContext.defaultParallelism,  # type: ignore[arg-type]
                          plan.max_offsets_per_trigger, plan.starting_offsets)
    decoded = records.transform(decode_records(plan.writers, plan.table, survey))
    return decoded.transform(kept_alerts(survey, plan.config.filters))


def read_saved(spark: SparkSession, inputs: str | list[str], config: ConfigLike) -> DataFrame:
    """The batch DataFrame of saved alerts (Avro files, gzipped or not, folders or globs of
    them, fink-spark's or Fink's Parquet), decoded and filtered as the job does. Files that
    cannot be read are left out (`fink-spark reprocess` quarantines them)."""
    config = job_config(config, kafka_required=False)
    inputs = [inputs] if isinstance(inputs, str) else inputs
    plan = plan_inputs(spark, config, inputs, [], CheckpointFiles.at(config.output.checkpoint))
    frames = [read_input(spark, path, kind, config, plan.writers, plan.table, "saved", None) for path, kind in plan.kinds.items()]
    records = frames[0]
    for frame in frames[1:]:
        records = records.unionByName(frame)
    return records.select(*RECORD_COLUMNS).transform(kept_alerts(config.survey, config.filters))


def apply_filters(alerts: DataFrame, filters: list[Any], survey: str = "ztf") -> DataFrame:
    """Alerts (streaming or batch, with the table's columns) that pass `filters`: the
    configuration's `filters` list (presets, ranges, SQL conditions; see docs/filters.md)."""
    chosen = get_survey(survey)
    return alerts.transform(filters_applied(parse_filters(filters, chosen)))

