"""Decoding Kafka records into alerts with Spark's built-in `from_avro` (no Python per alert).

Each record's key selects its writer schema; Avro resolves it onto the output table's
schema, through the reader schema the table gives that writer (`TableSchema.reader_for`).
Records that do not give a genuine alert get a `reject_reason` and go to the quarantine
instead of the table:
no or empty value, a key that names no usable schema, bytes that do not decode,
bytes that decode to an alert without its ids, or an alert whose ids disagree. A key
that names a schema the job has not met yet (JSON, or a bundled version) stops the query
with UNKNOWN_SCHEMA, so that the job learns that schema, adds it to the table's and
starts again from its checkpoint (see `fink_spark.run.stream`).
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro
from pyspark.sql.types import DataType, StructType

from fink_spark.schema.table import TableSchema
from fink_spark.schema.writer import NOT_A_SCHEMA_KEY, UNBUNDLED_VERSION, VERSION_KEY, WriterSchemas
from fink_spark.surveys import Survey
from fink_spark.transform.sky import POSITION_COLUMNS, position_columns

UNKNOWN_SCHEMA = "FINK_SPARK_UNKNOWN_WRITER_SCHEMA"
# The columns fink-spark adds to an alert's fields: where it came from, when it was seen, where on the sky
KAFKA_POSITION = ("topic", "kafka_partition", "kafka_offset")  # where a row came from: one Kafka record
METADATA_COLUMNS = (*KAFKA_POSITION, "kafka_timestamp", "ingest_time", "obs_time", *POSITION_COLUMNS)
NIGHT_COLUMNS = ("year", "month", "day")
OBS_TIME = "obs_time"  # the observation's time (UTC), from the survey's MJD
UNIX_EPOCH_MJD = 40587
# When fink-spark wrote the alert, to the millisecond. Not current_timestamp(): Spark writes
# each micro-batch's time into the generated code as a constant, so every micro-batch
# compiled the alerts' projection again and ran it cold (a batch of 600 ZTF alerts took
# 1.2 to 2 s to write instead of 1; bench/TUNING.md).
INGEST_TIME = "timestamp_millis(CAST(reflect('java.lang.System', 'currentTimeMillis') AS BIGINT))"


def _decoded(writers: WriterSchemas, table: TableSchema) -> Column:
    """The alert struct, decoded with the writer schema its key names (null if none)."""
    branches = [(F.col("topic") == F.lit(topic), writer) for topic, writer in writers.by_topic.items()]
    branches += [(F.col("key") == F.lit(key), writer) for key, writer in writers.known.items()]
    if not branches:
        return F.lit(None)
    readers: dict[str, str] = {}

    def decode(writer: str) -> Column:
        reader = readers.setdefault(writer, table.reader_for(writer))
        return from_avro(F.col("value"), writer, {"mode": "PERMISSIVE", "avroSchema": reader})

    condition, writer = branches[0]
    decoded = F.when(condition, decode(writer))
    for condition, writer in branches[1:]:
        decoded = decoded.when(condition, decode(writer))
    return decoded


def _decoded_once(alert: Column) -> Column:
    """The decoded alert, made nondeterministic so that each record is decoded once.

    Spark pushes filters below the projection they read by copying the projection's
    expressions into them: a filter on `reject_reason` or on an alert column would run
    `from_avro` once more per reference (Spark 4.1 for every filter, 4.2 still for a
    user's filter on alert columns). Spark never pushes a filter through a
    nondeterministic projection (SPARK-13473), and the partition id costs nothing.
    """
    return F.when(F.spark_partition_id() >= 0, alert)


def _is_key(key: bytes) -> Column:
    """Whether a record's key is `key`; a long one (a hostile or broken schema) is matched by its
    length, then its digest, so that the query's plan does not carry it whole."""
    if len(key) <= 100_000:
        return F.col("key") == F.lit(key)
    return (F.length("key") == len(key)) & (F.sha2(F.col("key"), 256) == hashlib.sha256(key).hexdigest())


def has_column(schema: DataType, path: str) -> bool:
    """Whether a (dotted) column exists: older schemas lack some of Fink's fields."""
    data_type: DataType = schema
    for name in path.split("."):
        if not isinstance(data_type, StructType) or name not in data_type.names:
            return False
        data_type = data_type[name].dataType
    return True


def _reject_reason(writers: WriterSchemas, survey: Survey, time_columns: list[str]) -> Column:
    """Why a record is not a genuine alert, or null if it is one. `time_columns`: those of
    the survey's time columns that the decoded records have (an alert's, a flat record's)."""
    where = F.concat(
        F.lit(" (topic "), F.col("topic"), F.lit(", partition "), F.col("partition").cast("string"),
        F.lit(", offset "), F.col("offset").cast("string"), F.lit(")"),
    )
    time = survey.time_sql([f"alert.{column}" for column in time_columns]) if time_columns else "NULL"
    required = [F.col(f"alert.{column}") for column in survey.required_columns] + [F.expr(time)]
    # Spark's PERMISSIVE decoding gives null, or a record of nulls, for bytes it cannot decode
    none_of_them = reduce(operator.and_, [column.isNull() for column in required])
    not_decoded = F.when(F.col("alert").isNull() | none_of_them, F.lit("value does not decode with the writer schema its key names"))
    for column in survey.required_columns:
        not_decoded = not_decoded.when(F.col(f"alert.{column}").isNull(),
                                       F.lit(f"no {column}: not an alert-shaped {survey.label} record"))
    not_decoded = not_decoded.when(F.expr(time).isNull(), F.lit(
        f"no {' nor '.join(survey.time_columns)}: not an alert-shaped {survey.label} record"))
    for check in survey.sanity_checks:
        check = check.replace("{time}", time)
        not_decoded = not_decoded.when(
            ~F.coalesce(F.expr(check), F.lit(False)),
            F.lit(f"{check.replace('alert.', '')} does not hold: the value decodes, but not to a genuine "
                  f"{survey.label} alert (bytes of another schema?)"))
    for check, why in survey.consistency_checks:
        not_decoded = not_decoded.when(~F.coalesce(F.expr(check), F.lit(False)), F.lit(why))
    reason = (
        F.when(F.col("value").isNull(), F.lit("null value"))
        .when(F.length("value") == 0, F.lit("empty value"))
    )
    if writers.by_topic:
        reason = reason.when(F.col("topic").isin(*writers.by_topic), not_decoded)
    reason = reason.when(F.col("key").isNull(), F.lit("no key: the writer schema is unknown"))
    if writers.known:
        reason = reason.when(F.col("key").isin(*[F.lit(key) for key in writers.known]), not_decoded)
    for key, why in writers.rejected.items():
        reason = reason.when(_is_key(key), F.lit(why))
    key_text = F.col("key").cast("string")
    unknown = F.ltrim(key_text).startswith("{")
    bundled = [F.lit(key) for key in writers.bundled_versions() if key not in writers.known]
    if bundled:
        unknown = unknown | F.col("key").isin(*bundled)
    return (
        reason.when(unknown, F.raise_error(F.concat(F.lit(UNKNOWN_SCHEMA), where)))
        .when(
            key_text.rlike(VERSION_KEY.pattern),
            F.concat(
                F.lit("key names schema version "), key_text,
                F.lit(f", {UNBUNDLED_VERSION}"),
            ),
        )
        .otherwise(F.lit(f"key {NOT_A_SCHEMA_KEY}"))
    )


def decode_records(writers: WriterSchemas, table: TableSchema, survey: Survey) -> Callable[[DataFrame], DataFrame]:
    """Raw Kafka records -> the same records with `alert` (struct) and `reject_reason`."""

    def transform(records: DataFrame) -> DataFrame:
        jvm = records.sparkSession._jvm  # type: ignore[attr-defined]
        writers.reject_unparsable(lambda text: jvm.org.apache.avro.Schema.Parser().parse(text))
        decoded = records.withColumn("alert", _decoded_once(_decoded(writers, table)))
        alert_type = decoded.schema["alert"].dataType
        time_columns = [column for column in survey.time_columns if has_column(alert_type, column)]
        return decoded.withColumn("reject_reason", _reject_reason(writers, survey, time_columns))

    return transform


def _night(survey: Survey, columns: StructType) -> list[Column]:
    """year, month, day of the alert's observation (UTC date of its time, as Fink partitions),
    and the time itself, `obs_time` (an Iceberg table is partitioned by its day), from
    whichever of the survey's time columns the record has."""
    present = [column for column in survey.time_columns if has_column(columns, column)]
    mjd = survey.mjd_sql(present) if present else "CAST(NULL AS DOUBLE)"
    date = F.expr(f"date_add(DATE'1858-11-17', CAST(floor({mjd}) AS INT))")
    obs_time = F.expr(f"timestamp_micros(CAST(round(({mjd} - {UNIX_EPOCH_MJD}) * 86400000000) AS BIGINT))")
    return [F.year(date).alias("year"), F.month(date).alias("month"), F.dayofmonth(date).alias("day"),
            obs_time.alias(OBS_TIME)]


def flatten_alerts(survey: Survey) -> Callable[[DataFrame], DataFrame]:
    """Decoded records -> one row per genuine alert: its fields as columns, Kafka metadata,
    night, position (`ra`, `dec`, `_healpix_29`).

    An alert field named like a metadata column is kept as `alert_<name>`; Fink's own
    year/month/day fields are replaced by the night columns, which hold the same dates.
    """

    def transform(decoded: DataFrame) -> DataFrame:
        good = decoded.where(F.col("reject_reason").isNull())
        field_names = good.schema["alert"].dataType.names  # type: ignore[attr-defined]
        # One selectExpr, not a select of Columns: building a hundred Column objects costs a
        # py4j round trip each, 0.4 s a micro-batch (bench/TUNING.md).
        fields = [
            f"alert.`{name}` AS `{'alert_' + name if name in METADATA_COLUMNS else name}`"
            for name in field_names
            if name not in NIGHT_COLUMNS
        ]
        flat = good.selectExpr(
            *fields,
            "topic",
            "partition AS kafka_partition",
            "offset AS kafka_offset",
            "timestamp AS kafka_timestamp",
            f"{INGEST_TIME} AS ingest_time",
        )
        positions = position_columns(survey, lambda column: has_column(flat.schema, column))
        return flat.select("*", *_night(survey, flat.schema), *map(F.expr, positions))  # one projection

    return transform


def quarantined(decoded: DataFrame) -> DataFrame:
    """Decoded records -> the records that are not alerts, raw, with the reason."""
    return decoded.where(F.col("reject_reason").isNotNull()).select(
        "topic",
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        "key",
        "value",
        "reject_reason",
        F.expr(INGEST_TIME).alias("ingest_time"),
    )
