"""Shared fixtures: one real Kafka broker and one SparkSession for the whole test session."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import pickle
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pytest
from pyspark.sql import DataFrame, SparkSession

from fink_spark.config.job import JobConfig, parse_config
from fink_spark.config.session import build_session, local_conf
from fink_spark.kafka.client import arrow_records
from fink_spark.paths import SAMPLE_DIR
from fink_spark.run.pipeline import kept_alerts
from fink_spark.run.stream import prepare_stream, run_stream
from fink_spark.schema.table import TableSchema
from fink_spark.schema.writer import WriterSchemas
from fink_spark.surveys import Survey
from fink_spark.testing.local_broker import LocalKafka
from fink_spark.testing.publisher import encode, read_saved_alerts
from fink_spark.transform.decode import decode_records

USER, PASSWORD = "fink_user", "test-password-4f1c"
_topic_numbers = itertools.count()
BROKER_FIXTURES = {"broker", "acl_broker", "new_topic"}



def parquet_output(tmp_path: Path) -> dict[str, Any]:
    """A configuration's `output` for a plain Parquet folder `out` and its checkpoint `chk` under tmp_path."""
    return {"format": "parquet", "table": {"path": str(tmp_path / "out"), "checkpoint": str(tmp_path / "chk")}}

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the broker (directly or through another fixture) are marked `broker`:
    `scripts/test.sh --fast` leaves them out."""
    for item in items:
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalKafka]:
    # messages up to 4 MiB: LSST alerts with long histories weigh 2 MiB
    with LocalKafka(users={USER: PASSWORD, "other_user": "other-password"}, message_max_bytes=4 * 2**20) as kafka:
        yield kafka


def _new_session() -> SparkSession:
    os.environ["PYSPARK_PYTHON"] = sys.executable  # Python workers with the test's packages
    conf = local_conf(shuffle_partitions=2)
    conf = {
        **conf,
        # The parallel collector: on 2 cores G1's concurrent threads take CPU from the tasks
        # (the fast tier ran in 155 s with it, 169 to 174 s with G1).
        "spark.driver.extraJavaOptions": conf["spark.driver.extraJavaOptions"] + " -XX:+UseParallelGC",
        # In-memory frames (kafka_frame) are local relations, which Spark's optimizer would
        # decode and filter itself, in the driver: the tests' plans run as the job's do instead.
        "spark.sql.optimizer.excludedRules": "org.apache.spark.sql.catalyst.optimizer.ConvertToLocalRelation",
    }
    return build_session("fink-spark-tests", "local[2]", conf)


_starting_session: Future[SparkSession] | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Start the session's JVM while pytest collects the tests: its 5 s of start-up overlap
    the 6 s of collecting (a run that uses no Spark waits for it at the end, to stop it)."""
    global _starting_session  # noqa: PLW0603 - one session for the whole test run
    if not config.option.collectonly:
        _starting_session = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spark-start").submit(_new_session)


def pytest_unconfigure(config: pytest.Config) -> None:  # noqa: ARG001
    if _starting_session is not None:
        _starting_session.result().stop()


@pytest.fixture(scope="session")
def spark() -> SparkSession:
    return _starting_session.result() if _starting_session is not None else _new_session()


@pytest.fixture(scope="session")
def reprocessed_samples(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ZTF and the LSST samples of 2026 reprocessed from their Avro files into the topic
    `fink_explore_<survey>`, as Parquet (no broker), written once for the modules that read
    them. Each also holds a stray Parquet file that its sink never committed (as a batch
    interrupted by a crash leaves): a reader must not see its alerts."""
    from fink_spark.run.reprocess import reprocess

    folder = tmp_path_factory.mktemp("reprocessed")
    outputs = {name: folder / name / "alerts" for name in ("ztf", "lsst")}
    for name, output in outputs.items():
        config = parse_config({"survey": name, "output": {"format": "parquet", "table": {
            "path": str(output), "checkpoint": str(folder / name / "checkpoints")}}}, kafka_required=False)
        reprocess(spark, config, [str(sample(f"{name}-2026"))], [], f"fink_explore_{name}")
        committed = next(output.rglob("*.parquet"))
        shutil.copy(committed, committed.with_name("part-99999-uncommitted.c000.zstd.parquet"))
    return outputs


@pytest.fixture
def new_topic(broker: LocalKafka):  # noqa: ANN201
    """Make fresh topics on the broker: new_topic("name") -> unique topic name."""

    def make(name: str, partitions: int = 1) -> str:
        topic = f"{name}_{next(_topic_numbers)}"
        broker.create_topics([topic], partitions)
        return topic

    return make


def read_table(warehouse: Path, columns: list[str] | None = None, table: str = "ztf.alerts") -> pa.Table:
    """An Iceberg output as a user reads it with pyiceberg alone (README 'Reading the table'):
    the current snapshot, as Arrow (no rows before the first commit)."""
    from pyiceberg.catalog.sql import SqlCatalog

    if not (warehouse / "catalog.db").exists():
        return pa.table({name: [] for name in columns or []})
    catalog = SqlCatalog("fink", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=warehouse.as_uri())
    if not catalog.table_exists(table):
        return pa.table({name: [] for name in columns or []})
    return catalog.load_table(table).scan(selected_fields=tuple(columns) if columns else ("*",)).to_arrow()


def sample(folder: str) -> Path:
    return SAMPLE_DIR / folder


def kafka_records(spark: SparkSession, folder: str, topic: str, extra_values: tuple[bytes, ...] = ()) -> DataFrame:
    """A sample folder's alerts as Fink publishes them (value: schemaless datum, key: writer
    schema), then `extra_values` with the same key, as an in-memory DataFrame in the shape of
    Spark's Kafka source: for tests of transformations that need no broker."""
    saved = next(read_saved_alerts([sample(folder)]))
    return kafka_messages(spark, saved.schema_text, saved.records, topic, extra_values)


def kept_in_memory(spark: SparkSession, folders: list[str], survey: Survey, schema: str | None = None) -> DataFrame:
    """Sample folders' alerts as the job keeps them (no filter), decoded from in-memory Kafka
    records with the job's own transformations: the table's schema starts from `schema` (a
    file) or the first folder's writer schema, and takes in the others'. No broker."""
    saved = list(read_saved_alerts([sample(folder) for folder in folders]))  # one per file
    writers = WriterSchemas(survey)
    table = TableSchema.first(Path(schema).read_text() if schema else saved[0].schema_text, "test")
    for alerts in saved:
        writers.learn(alerts.schema_text.encode())
        table.merge(alerts.schema_text, "test")
    records = [kafka_messages(spark, alerts.schema_text, alerts.records, f"fink_{survey.name}") for alerts in saved]
    decoded = reduce(DataFrame.unionByName, records).transform(decode_records(writers, table, survey))
    return decoded.transform(kept_alerts(survey, ())).localCheckpoint()


_PARSED: dict[str, Any] = {}
_DATUMS: dict[tuple[str, bytes], bytes] = {}


def avro_datum(schema_text: str, record: dict[str, Any]) -> bytes:
    """`record` as one schemaless Avro datum of `schema_text` (fastavro), remembered for the
    test session: the tests encode the same real alerts again and again, and fastavro takes
    about 80 ms for an LSST alert. The key is the record's pickle, so a changed record is
    encoded anew."""
    if schema_text not in _PARSED:
        _PARSED[schema_text] = fastavro.parse_schema(json.loads(schema_text))
    key = (schema_text, hashlib.blake2b(pickle.dumps(record, protocol=5), digest_size=16).digest())
    if key not in _DATUMS:
        _DATUMS[key] = encode(record, _PARSED[schema_text])
    return _DATUMS[key]


def kafka_messages(spark: SparkSession, schema_text: str, records: list[dict[str, Any]], topic: str,
                   extra_values: tuple[bytes, ...] = ()) -> DataFrame:
    """`records` encoded with `schema_text` and keyed by it, then `extra_values`, as Spark's
    Kafka source gives them (one partition, offsets from 0)."""
    values = [avro_datum(schema_text, record) for record in records] + list(extra_values)
    stamp = datetime(2026, 3, 22, tzinfo=timezone.utc)
    return kafka_frame(spark, [(schema_text.encode(), value, topic, 0, offset, stamp) for offset, value in enumerate(values)])


def kafka_frame(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """(key, value, topic, partition, offset, timestamp) rows as Spark's Kafka source gives
    them; made through Arrow, which needs no Python worker (faster, in every later action too)."""
    return spark.createDataFrame(arrow_records(rows))


def job_config(
    broker: LocalKafka, tmp_path: Path, topics: list[str], survey: str = "ztf", **overrides: Any
) -> JobConfig:
    """A configuration for the test broker, with outputs under tmp_path and 'available now'.

    `section__key=value` overrides a key of a section, `parquet={...}` keys of output.table (a Parquet folder).
    """
    data: dict[str, Any] = {
        "survey": survey,
        "kafka": {
            "servers": broker.bootstrap,
            "username": USER,
            "password": PASSWORD,
            "group_id": f"{USER}_spark",
            "topics": topics,
            "starting_offsets": "earliest",
        },
        "output": {
            "format": "parquet", "table": {"path": str(tmp_path / "alerts"), "checkpoint": str(tmp_path / "checkpoints")},
            "console": {"enabled": True, "rows": 100},
        },
        "trigger": {"available_now": True},
    }
    data["output"]["table"].update(overrides.pop("parquet", {}))
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            data[section][name] = value
        else:
            data[section] = value
    return parse_config(data)


def stream_samples(
    spark: SparkSession, broker: LocalKafka, folder: Path, topic: str, samples: list[str], survey: str = "ztf",
    **overrides: Any,
) -> Path:
    """Publish sample folders to a new topic and run the job over it: the Parquet output."""
    from fink_spark.surveys import get_survey
    from fink_spark.testing.publisher import publish

    broker.create_topics([topic])
    publish(broker.client_config(USER), topic, [sample(name) for name in samples], get_survey(survey))
    run_job(spark, job_config(broker, folder, [topic], survey=survey, **overrides))
    return folder / "alerts"


def run_job(spark: SparkSession, config: JobConfig) -> str:
    """Run the streaming job to the end of the topics; returns what it printed."""
    out = io.StringIO()
    run_stream(spark, prepare_stream(config), out=out)
    return out.getvalue()
