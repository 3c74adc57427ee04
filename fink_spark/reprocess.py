"""Reprocessing saved streams with the live job's decoding, filters and layout.

Inputs are read by Spark streaming sources with "available now" and a checkpoint, so
that a rerun over the same input adds nothing and an interrupted run resumes where it
stopped, each alert landing once:

- Avro container files (one or many alerts each, any writer schema): Spark's Avro
  reader, each file's writer schema resolved onto the reader schema;
- gzipped Avro files (`.avro.gz`): read whole, unzipped and re-keyed by their writer
  schema in Python (one call per file), then decoded like Kafka records;
- Parquet: fink-spark's own output or Fink's Data Transfer Parquet;
- Kafka offset ranges: the Kafka source from the start offsets, keeping offsets below
  the end ones.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import reduce
from pathlib import Path

import fastavro
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StructType

from fink_spark.config import JobConfig, TriggerConfig
from fink_spark.decode import alerts, decode_records
from fink_spark.errors import ConfigError
from fink_spark.filters import check_filters
from fink_spark.kafka_source import key_at, offsets_json, spark_kafka_options
from fink_spark.schemas import WriterSchemas, lenient_reader, load_schema_text
from fink_spark.sinks import parquet_query
from fink_spark.streaming import BatchLog, kept_alerts
from fink_spark.surveys import Survey

log = logging.getLogger(__name__)

AVRO, AVRO_GZ, PARQUET = "avro", "avro.gz", "parquet"
FILES_PER_BATCH = 2000
BINARY_FILE_SCHEMA = "path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY"


@dataclass(frozen=True)
class KafkaRange:
    """Offsets [start, end) of each partition of one topic."""

    topic: str
    start: dict[int, int]
    end: dict[int, int]

    @classmethod
    def parse(cls, text: str) -> KafkaRange:
        """TOPIC:PARTITION=START-END[,PARTITION=START-END...], e.g. fink_sn_candidates_ztf:0=100-200."""
        try:
            topic, spans = text.split(":", 1)
            start, end = {}, {}
            for span in spans.split(","):
                partition, offsets = span.split("=")
                first, last = offsets.split("-")
                start[int(partition)], end[int(partition)] = int(first), int(last)
        except ValueError:
            raise ConfigError(
                f"--kafka-range {text!r}: expected TOPIC:PARTITION=START-END[,PARTITION=START-END...]"
            ) from None
        if any(end[p] < start[p] for p in start):
            raise ConfigError(f"--kafka-range {text!r}: an end offset is before its start.")
        return cls(topic, start, end)


def input_kind(path: str) -> str:
    """What a path holds, from its name or, for a folder, from the files in it."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for kind in (AVRO_GZ, AVRO, PARQUET):
        if name.endswith("." + kind) or name.endswith("*." + kind):
            return kind
    local = Path(path)
    if local.is_dir():
        for kind in (AVRO_GZ, AVRO, PARQUET):
            if next(local.rglob("*." + kind), None) is not None:
                return kind
        raise ConfigError(f"{path} holds no .avro, .avro.gz or .parquet file.")
    if "://" not in path and not any(char in path for char in "*?["):
        raise ConfigError(f"No such input: {path}")
    raise ConfigError(f"Cannot tell what {path} holds: name the files (*.avro, *.avro.gz, *.parquet).")


def count_files(path: str, kind: str) -> int | None:
    """How many input files a local path holds (None for remote storage: no total)."""
    local = Path(path)
    if "://" in path:
        return None
    if local.is_file():
        return 1
    if local.is_dir():
        return sum(1 for _ in local.rglob("*." + kind))
    return sum(1 for _ in Path("/").glob(path.lstrip("/"))) if path.startswith("/") else sum(1 for _ in Path().glob(path))


def spark_path(path: str) -> str:
    """The path to give Spark's file stream sources, which read folders and globs but not a
    file named alone: a local file becomes a glob that matches only it."""
    local = Path(path)
    if "://" in path or not local.is_file():
        return path
    escaped = re.sub(r"([{}\[\]*?,\\])", r"\\\1", local.name)
    return str(local.parent / f"{{{escaped}}}")


# What every input becomes: the decoded-record shape of the live job, without the raw bytes.
RECORD_COLUMNS = ("alert", "reject_reason", "topic", "partition", "offset", "timestamp")


def _with_kafka_metadata(frame: DataFrame, topic: str, *columns: Column | str, saved: bool = False) -> DataFrame:
    """`columns` and the Kafka metadata of a live record. A fink-spark table keeps that
    metadata in its own columns (`saved`); files have none: the given topic and nulls."""

    def kept_or(column: str, fallback: Column) -> Column:
        return F.col(column) if saved and column in frame.columns else fallback

    return frame.select(
        *columns,
        kept_or("topic", F.lit(topic)).alias("topic"),
        kept_or("kafka_partition", F.lit(None).cast("int")).alias("partition"),
        kept_or("kafka_offset", F.lit(None).cast("long")).alias("offset"),
        kept_or("kafka_timestamp", F.lit(None).cast("timestamp")).alias("timestamp"),
    )


def _accepted(alert: Column) -> list[Column]:
    """An alert a file reader decoded: it is genuine (files hold no poison records)."""
    return [alert.alias("alert"), F.lit(None).cast("string").alias("reject_reason")]


def _reader_spark_schema(spark: SparkSession, reader: str) -> StructType:
    """The Spark schema of alerts decoded with the (lenient) reader schema."""
    empty = spark.createDataFrame([], "value binary")
    return empty.select(from_avro("value", reader).alias("a")).schema["a"].dataType  # type: ignore[return-value]


def _gzip_records(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Each gzipped container file -> one (key = writer schema, value = datum) row per alert."""
    for batch in batches:
        keys, values = [], []
        for content in batch["content"]:
            with io.BytesIO(gzip.decompress(content)) as handle:
                reader = fastavro.reader(handle)
                schema_text = reader.metadata["avro.schema"]
                parsed = reader.writer_schema
                for record in reader:
                    buffer = io.BytesIO()
                    fastavro.schemaless_writer(buffer, parsed, record)
                    keys.append(schema_text.encode())
                    values.append(buffer.getvalue())
        yield pd.DataFrame({"key": keys, "value": values})


def read_input(
    spark: SparkSession, path: str, kind: str, config: JobConfig, reader_schema: str, topic: str,
    files_per_batch: int = FILES_PER_BATCH,
) -> DataFrame:
    """A stream of decoded records (RECORD_COLUMNS) from one input path."""
    survey = config.survey
    reader = lenient_reader(reader_schema)
    if kind == AVRO:
        frame = (
            spark.readStream.format("avro").schema(_reader_spark_schema(spark, reader))
            .option("avroSchema", reader).option("maxFilesPerTrigger", files_per_batch)
            .load(spark_path(path))
        )
        return _with_kafka_metadata(frame, topic, *_accepted(F.struct(*[F.col(f"`{name}`") for name in frame.columns])))
    if kind == AVRO_GZ:
        files = (
            spark.readStream.format("binaryFile").schema(BINARY_FILE_SCHEMA).option("pathGlobFilter", "*.avro.gz")
            .option("maxFilesPerTrigger", files_per_batch).load(spark_path(path)).select("content")
        )
        pairs = _with_kafka_metadata(files.mapInPandas(_gzip_records, "key binary, value binary"), topic, "key", "value")
        decoded = pairs.transform(decode_records(gz_writer_schemas(path, survey), reader_schema, survey))
        return decoded.select(*RECORD_COLUMNS)
    if kind == PARQUET:
        schema = spark.read.parquet(path).schema
        frame = spark.readStream.schema(schema).option("maxFilesPerTrigger", files_per_batch).parquet(spark_path(path))
        alert_type = _reader_spark_schema(spark, reader)
        fields = [
            (F.col(f"`{field.name}`") if field.name in frame.columns else F.lit(None)).cast(field.dataType).alias(field.name)
            for field in alert_type.fields
        ]
        return _with_kafka_metadata(frame, topic, *_accepted(F.struct(*fields)), saved=True)
    raise ConfigError(f"Unknown input kind {kind}")


def gz_writer_schemas(path: str, survey: Survey) -> WriterSchemas:
    """The writer schemas of gzipped container files (read from each local file's header)."""
    writers = WriterSchemas(survey)
    local = Path(path)
    files = [local] if local.is_file() else sorted(local.rglob("*.avro.gz"))
    for file in files:
        with gzip.open(file, "rb") as handle:
            writers.learn(fastavro.reader(handle).metadata["avro.schema"].encode())
    return writers


def read_kafka_range(spark: SparkSession, config: JobConfig, span: KafkaRange, writers: WriterSchemas,
                     reader_schema: str) -> DataFrame:
    """Decoded records of a Kafka offset range (the stream starts at the range, offsets past its end are dropped)."""
    if config.kafka is None:
        raise ConfigError("--kafka-range needs a 'kafka' section (servers, credentials) in the configuration.")
    options = {k: v for k, v in spark_kafka_options(config.kafka).items() if k not in ("subscribe", "subscribePattern")}
    frame = (
        spark.readStream.format("kafka").options(**options)
        .option("assign", json.dumps({span.topic: sorted(span.start)}))
        .option("startingOffsets", offsets_json({span.topic: span.start}))
        .load()
        .select("key", "value", "topic", "partition", "offset", "timestamp")
    )
    inside = F.lit(False)
    for partition, end in span.end.items():
        inside = inside | ((F.col("partition") == partition) & (F.col("offset") < end))
    return frame.where(inside).transform(decode_records(writers, reader_schema, config.survey)).select(*RECORD_COLUMNS)


class _Progress(BatchLog):
    """Files and alerts done, rate and time left, one line per micro-batch."""

    def __init__(self, total_files: int | None, files_per_batch: int) -> None:
        self.total_files = total_files
        self.files_per_batch = files_per_batch
        self.alerts = 0
        self.started = time.monotonic()

    def onQueryProgress(self, event) -> None:  # noqa: N802, ANN001
        progress = event.progress
        if not progress.numInputRows:
            return
        self.alerts += progress.numInputRows
        elapsed = time.monotonic() - self.started
        files = min((progress.batchId + 1) * self.files_per_batch, self.total_files or 0)
        line = f"reprocess: batch {progress.batchId}, {self.alerts} alerts, {self.alerts / elapsed:.0f} alerts/s"
        if self.total_files:
            rate = files / elapsed
            left = (self.total_files - files) / rate if rate else 0
            line += f", files {files}/{self.total_files}, {rate:.0f} files/s, about {left:.0f} s left"
        log.info(line)


def reprocess(
    spark: SparkSession, config: JobConfig, inputs: list[str], kafka_ranges: list[KafkaRange], topic: str,
    count_only: bool = False, files_per_batch: int = FILES_PER_BATCH,
) -> int:
    """Decode, filter and write (or only count) the inputs; returns how many alerts passed."""
    survey = config.survey
    config = replace(config, trigger=TriggerConfig(processing_time=None, available_now=True))
    reader_schema = load_schema_text(config.schema or survey.latest_schema)
    checkpoint = config.parquet.checkpoint.rstrip("/")
    sources: list[tuple[str, DataFrame, int | None]] = []
    for index, path in enumerate(inputs):
        kind = input_kind(path)
        frame = read_input(spark, path, kind, config, reader_schema, topic, files_per_batch)
        sources.append((f"input{index}", frame, count_files(path, kind)))
    if kafka_ranges:
        writers = WriterSchemas(survey)
        writers.add_bundled_versions()
        for span in kafka_ranges:
            for partition, start in span.start.items():
                if span.end[partition] > start:
                    key = key_at(config.kafka, span.topic, partition, start)
                    if key is not None:
                        writers.learn(key)
        for span in kafka_ranges:
            sources.append((f"kafka_{span.topic}", read_kafka_range(spark, config, span, writers, reader_schema), None))
    # One query over the union of the inputs: a Parquet sink folder takes one writer.
    records = reduce(DataFrame.unionByName, [frame for _, frame, _ in sources])
    check_filters(config.filters, records.transform(alerts(survey)))
    table = records.transform(kept_alerts(survey, config.filters))
    if count_only:
        return _count(table)
    files = [count for _, _, count in sources]
    listener = _Progress(sum(files) if None not in files else None, files_per_batch)  # type: ignore[arg-type]
    spark.streams.addListener(listener)
    try:
        query: StreamingQuery = parquet_query(
            table, config.parquet.path, f"{checkpoint}/reprocess", config.parquet.partition_by, config.trigger, "reprocess",
            config.parquet.compression,
        )
        query.awaitTermination()
        return sum(progress["numInputRows"] for progress in query.recentProgress)
    finally:
        spark.streams.removeListener(listener)


def _count(table: DataFrame) -> int:
    """Count what passes, writing nothing (a throw-away checkpoint: every run counts everything)."""
    counted: list[int] = []
    with tempfile.TemporaryDirectory(prefix="fink-spark-count-") as checkpoint:
        query = (
            table.writeStream.foreachBatch(lambda batch, _: counted.append(batch.count()))
            .option("checkpointLocation", checkpoint).trigger(availableNow=True).start()
        )
        query.awaitTermination()
    return sum(counted)

