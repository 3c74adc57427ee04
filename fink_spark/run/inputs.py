"""What reprocessing reads: each input's kind, its files and writer schemas, and its records
decoded as the live job decodes Kafka's.

- Avro container files, gzipped or not (one or many alerts each, any writer schema): read
  whole, cut into one datum per alert keyed by the file's writer schema (in Python, one
  call per file, no decoding for one-alert blocks), then decoded like Kafka records, so
  that the table's schema follows the writer schemas met as the live job's does; a file
  that cannot be read goes to the quarantine with its path;
- Parquet: fink-spark's own output (read with its saved schema) or Fink's Parquet;
- Kafka offset ranges: the Kafka source from the start offsets, keeping offsets below
  the end ones.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fastavro
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro
from pyspark.sql.types import ArrayType, DataType, StructField, StructType

from fink_spark.config.job import JobConfig
from fink_spark.errors import ConfigError
from fink_spark.kafka.client import key_at
from fink_spark.kafka.source import read_offset_range
from fink_spark.run.pipeline import (
    starting_table_schema,
)
from fink_spark.schema.table import TableSchema
from fink_spark.schema.writer import WriterSchemas
from fink_spark.state import OUTPUT_TABLE_SCHEMA, CheckpointFiles
from fink_spark.table.read import read_table
from fink_spark.table.warehouse import is_warehouse, metadata_location
from fink_spark.transform.decode import METADATA_COLUMNS, decode_records

log = logging.getLogger(__name__)

AVRO, AVRO_GZ, PARQUET, ICEBERG = "avro", "avro.gz", "parquet", "iceberg"
SAVED_TABLES = (PARQUET, ICEBERG)  # fink-spark's or Fink's tables, decoded already
FILES_PER_BATCH = 2000
BINARY_FILE_SCHEMA = "path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY"


@dataclass(frozen=True)
class KafkaRange:
    """Offsets of one topic to read: per partition, [first, end) spans (one from the command
    line; the gaps `fink-spark audit --repair` reads, several)."""

    topic: str
    spans: dict[int, tuple[tuple[int, int], ...]]

    @classmethod
    def parse(cls, text: str) -> KafkaRange:
        """TOPIC:PARTITION=START-END[,PARTITION=START-END...], e.g. fink_sn_candidates_ztf:0=100-200."""
        try:
            topic, spans = text.split(":", 1)
            ranges = {}
            for span in spans.split(","):
                partition, offsets = span.split("=")
                first, last = offsets.split("-")
                ranges[int(partition)] = ((int(first), int(last)),)
        except ValueError:
            raise ConfigError(
                f"The Kafka range {text!r} is not TOPIC:PARTITION=START-END[,PARTITION=START-END...], "
                "e.g. fink_sn_candidates_ztf:0=100-200."
            ) from None
        if any(end < first for spans_of in ranges.values() for first, end in spans_of):
            raise ConfigError(f"The Kafka range {text!r} has an end offset before its start.")
        return cls(topic, ranges)

    def ledger_ranges(self) -> list[list]:
        """[topic, partition, first, end) of every span, as the ledger writes them."""
        return [[self.topic, partition, first, end] for partition, spans in sorted(self.spans.items())
                for first, end in spans if end > first]


def input_kind(path: str) -> str:
    """What a path holds, from its name or, for a folder, from the files in it."""
    if is_warehouse(path):
        return ICEBERG
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


def spark_path(path: str) -> str:
    """The path to give Spark's file stream sources, which read folders and globs but not a
    file named alone: a local file becomes a glob that matches only it."""
    local = Path(path)
    if "://" in path or not local.is_file():
        return path
    escaped = re.sub(r"([{}\[\]*?,\\])", r"\\\1", local.name)
    return str(local.parent / f"{{{escaped}}}")


# What every input becomes: the decoded-record shape of the live job.
RECORD_COLUMNS = ("key", "value", "alert", "reject_reason", "topic", "partition", "offset", "timestamp")
FILE_RECORD_SCHEMA = "key binary, value binary, unreadable string"


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


def _file_records(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Each Avro container file (gzipped or not) -> one row per alert, as Fink puts it on
    Kafka (key: the writer schema, value: the datum), or one row for a file that cannot be
    read (its bytes, and why). A block of one alert (one alert per file, the usual case)
    is its datum already; larger blocks are cut at each datum's end."""
    for batch in batches:
        keys, values, unreadable = [], [], []
        for path, content in zip(batch["path"], batch["content"]):
            try:
                data = gzip.decompress(content) if path.endswith(".gz") else content
                reader = fastavro.block_reader(io.BytesIO(data))
                key = reader.metadata["avro.schema"]
                datums = [datum for block in reader for datum in _datums(block)]
            except Exception as error:  # noqa: BLE001 - any failure: the file goes to the quarantine
                keys.append(None)
                values.append(content)
                shown = path.removeprefix("file:")
                unreadable.append(f"cannot read {shown} as an Avro file: {type(error).__name__}: {error}")
                continue
            keys += [key] * len(datums)
            values += datums
            unreadable += [None] * len(datums)
        yield pd.DataFrame({"key": keys, "value": values, "unreadable": unreadable})


def _datums(block: fastavro.block_reader) -> list[bytes]:
    data = block.bytes_.getvalue()
    if block.num_records == 1:
        return [data]
    stream, ends = io.BytesIO(data), []
    for _ in range(block.num_records):
        fastavro.schemaless_reader(stream, block.writer_schema, None)
        ends.append(stream.tell())
    return [data[start:end] for start, end in zip([0, *ends[:-1]], ends)]


def _conformed(column: Column, have: DataType, want: DataType, renames: dict[str, tuple[str, dict]]) -> Column:
    """A column of one Spark type as the table's: fields matched by name, or moved to the
    sibling column `renames` names; missing ones null; int and float widened (the table's
    types already follow `table_schema.WIDENINGS`, so a cast only widens)."""
    if have == want and not renames:
        return column
    if isinstance(have, StructType) and isinstance(want, StructType):
        sources = {renames.get(name, (name, {}))[0]: name for name in have.names}
        return F.when(column.isNotNull(), F.struct(*[
            (_conformed(column[sources[field.name]], have[sources[field.name]].dataType, field.dataType,
                        renames.get(sources[field.name], ("", {}))[1])
             if field.name in sources else F.lit(None).cast(field.dataType)).alias(field.name)
            for field in want.fields
        ]))
    if isinstance(have, ArrayType) and isinstance(want, ArrayType):
        return F.transform(column, lambda item: _conformed(item, have.elementType, want.elementType, renames))
    return column.cast(want)


def _alert_columns(frame: DataFrame) -> StructType:
    """The alert's own columns of a saved table: without the Kafka metadata a fink-spark
    table adds, and with the alert's fields of the same names (alert_<name>) back."""
    fields = [field for field in frame.schema.fields if field.name not in METADATA_COLUMNS]
    return StructType([
        StructField(field.name.removeprefix("alert_"), field.dataType, True)
        if field.name.removeprefix("alert_") in METADATA_COLUMNS else field
        for field in fields
    ])


def spark_as_avro(spark: SparkSession, columns: StructType) -> str:
    """Spark's own Avro schema for Spark columns (to merge a Parquet table's into the table's)."""
    jvm = spark._jvm  # type: ignore[attr-defined]
    data_type = jvm.org.apache.spark.sql.types.DataType.fromJson(columns.json())
    return str(jvm.org.apache.spark.sql.avro.SchemaConverters.toAvroType(data_type, False, "saved", "").toString())


def read_input(
    spark: SparkSession, path: str, kind: str, config: JobConfig, writers: WriterSchemas, table: TableSchema,
    topic: str, files_per_batch: int | None = FILES_PER_BATCH,
) -> DataFrame:
    """The decoded records (RECORD_COLUMNS) of one input path: a stream of `files_per_batch`
    files a micro-batch, or (None) a batch DataFrame of all of them.

    Parameters
    ----------
    spark
        The session.
    path, kind
        The input (a folder, a file or a glob) and what it holds (`plan_inputs` decides).
    config
        The job's configuration (its survey decodes the records).
    writers, table
        The writer schemas the inputs were read with, and the table's schema they conform to.
    topic
        The topic the rows are written under.
    files_per_batch
        Files a micro-batch at most; None reads them all as one batch DataFrame.
    """
    survey = config.survey
    reader = spark.read if files_per_batch is None else spark.readStream.option("maxFilesPerTrigger", files_per_batch)
    if kind in (AVRO, AVRO_GZ):
        files = (
            reader.format("binaryFile").schema(BINARY_FILE_SCHEMA).option("pathGlobFilter", f"*.{kind}")
            .load(spark_path(path)).select("path", "content")
        )
        pairs = _with_kafka_metadata(files.mapInPandas(_file_records, FILE_RECORD_SCHEMA), topic, "key", "value", "unreadable")
        decoded = pairs.transform(decode_records(writers, table, survey))
        reason = F.coalesce(F.col("unreadable"), F.col("reject_reason")).alias("reject_reason")
        return decoded.select(*[reason if name == "reject_reason" else name for name in RECORD_COLUMNS])
    if kind in SAVED_TABLES:
        saved = read_table(spark, path)
        if files_per_batch is None:
            frame = saved
        elif kind == ICEBERG:  # the table's snapshots, oldest first, as a stream
            frame = spark.readStream.format("iceberg").option("streaming-skip-overwrite-snapshots", "true").load(
                metadata_location(path))
        else:
            frame = reader.schema(saved.schema).parquet(spark_path(path))
        own = _alert_columns(frame)
        stored = {field.name: field.name if field.name in frame.columns else f"alert_{field.name}" for field in own.fields}
        alert = F.struct(*[F.col(f"`{stored[field.name]}`").alias(field.name) for field in own.fields])
        conformed = _conformed(alert, own, table_struct(spark, table), table.renames_for(spark_as_avro(spark, own)))
        nothing = F.lit(None).cast("binary")
        return _with_kafka_metadata(frame, topic, nothing.alias("key"), nothing.alias("value"), conformed.alias("alert"),
                                    F.lit(None).cast("string").alias("reject_reason"), saved=True)
    raise ConfigError(f"Unknown input kind {kind}")


def table_struct(spark: SparkSession, table: TableSchema) -> StructType:
    """The Spark type of an alert in the table's schema."""
    empty = spark.createDataFrame([], "value binary")
    return empty.select(from_avro("value", table.table_reader()).alias("a")).schema["a"].dataType  # type: ignore[return-value]


def input_files(path: str, kind: str) -> list[str]:
    """The local files an input names (a file, a folder or a glob); none for remote storage."""
    if "://" in path:
        return []
    local = Path(path)
    if local.is_file():
        return [str(local)]
    if local.is_dir():
        return sorted(str(file) for file in local.rglob(f"*.{kind}"))
    root, pattern = (Path("/"), path.lstrip("/")) if path.startswith("/") else (Path(), path)
    return sorted(str(file) for file in root.glob(pattern))


# An Avro container file's header (Avro specification, "Object Container Files"): reading
# it alone gives the writer schema without parsing it (a thirtieth of fastavro.reader's time).
CONTAINER_HEADER = fastavro.parse_schema({
    "type": "record", "name": "org.apache.avro.file.Header", "fields": [
        {"name": "magic", "type": {"type": "fixed", "name": "Magic", "size": 4}},
        {"name": "meta", "type": {"type": "map", "values": "bytes"}},
        {"name": "sync", "type": {"type": "fixed", "name": "Sync", "size": 16}},
    ],
})


def file_writer_schemas(files: list[str], writers: WriterSchemas) -> None:
    """Learn the writer schemas of Avro container files from their headers (a file whose
    header cannot be read is left for the run to quarantine)."""
    for file in files:
        try:
            with (gzip.open(file, "rb") if file.endswith(".gz") else open(file, "rb")) as handle:  # noqa: PTH123
                header = fastavro.schemaless_reader(handle, CONTAINER_HEADER, None)
            if header["magic"] == b"Obj\x01":
                writers.learn(header["meta"]["avro.schema"])
        except Exception:  # noqa: BLE001, S112 - unreadable: quarantined by the run, with the reason
            continue


def read_kafka_range(spark: SparkSession, config: JobConfig, span: KafkaRange, writers: WriterSchemas,
                     table: TableSchema) -> DataFrame:
    """Decoded records of a Kafka offset range (the stream starts at the range, offsets past its end are dropped)."""
    if config.kafka is None:
        raise ConfigError("Reading a Kafka offset range needs a 'kafka' section (servers, credentials) in the configuration.")
    frame = read_offset_range(spark, config.kafka, span.topic, span.spans)
    return frame.transform(decode_records(writers, table, config.survey)).select(*RECORD_COLUMNS)


@dataclass(frozen=True)
class InputsPlan:
    """What reprocessing knows before Spark reads: each input's kind and local files, the
    writer schemas of the files and of the Kafka ranges' first messages, the table's schema."""

    kinds: dict[str, str]
    files: dict[str, list[str]]
    writers: WriterSchemas
    table: TableSchema


def plan_inputs(spark: SparkSession, config: JobConfig, inputs: list[str], kafka_ranges: list[KafkaRange],
                state: CheckpointFiles) -> InputsPlan:
    """Look at the inputs before reading them (file headers, first Kafka messages)."""
    kinds = {path: input_kind(path) for path in inputs}
    files = {path: input_files(path, kind) for path, kind in kinds.items()}
    writers = WriterSchemas(config.survey)
    for path, kind in kinds.items():
        if kind not in SAVED_TABLES:
            file_writer_schemas(files[path], writers)
    for span in kafka_ranges:
        for _, partition, first, _end in span.ledger_ranges():
            key = key_at(config.kafka, span.topic, partition, first)
            if key is not None:
                writers.learn(key)
    table = starting_table_schema(config, state, writers, list(writers.known))
    for path in (path for path, kind in kinds.items() if kind in SAVED_TABLES):
        # A fink-spark table brings the Avro schema it saved; other Parquet, Spark's Avro form of its columns.
        saved = CheckpointFiles.at(path).read(OUTPUT_TABLE_SCHEMA)
        columns = json.dumps(json.loads(saved)["schema"]) if saved else spark_as_avro(spark, _alert_columns(read_table(spark, path)))
        changes = table.merge(columns, path)
        if changes:
            log.info("Table schema: %s (the Parquet of %s)", changes, path)
    return InputsPlan(kinds, files, writers, table)


