"""The one place that creates a SparkSession; everything else receives it."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping

from pyspark import SparkConf, SparkContext
from pyspark.errors import PySparkRuntimeError
from pyspark.sql import SparkSession

from fink_spark.errors import ConfigError
from fink_spark.paths import CONF_DIR, connector_jars, driver_java_options, has_connector_jars

# The connectors at the versions pinned with pyspark (deps/spark-connectors.pom.xml): when no
# jars were resolved by scripts/setup.sh (an installed fink-spark), Spark resolves these
# from Maven Central once into its user cache (~/.ivy2.5.2) and reuses them after.
CONNECTOR_PACKAGES = {
    "spark.jars.packages": ",".join([
        "org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.3",
        "org.apache.spark:spark-token-provider-kafka-0-10_2.13:4.1.1",  # 4.1.3 is not on Maven Central
        "org.apache.spark:spark-avro_2.13:4.1.1",  # nor is 4.1.3
        "org.apache.iceberg:iceberg-spark-runtime-4.1_2.13:1.12.0",
        "org.xerial:sqlite-jdbc:3.51.1.0",
        "org.postgresql:postgresql:42.7.8",
    ]),
    "spark.jars.excludes": "org.apache.spark:spark-token-provider-kafka-0-10_2.13",
}

# Options and settings that could carry a Kafka password are redacted wherever Spark
# shows them (UI environment page, event log, explain output).
REDACTION = "(?i)secret|password|token|access[.]?key|jaas"

# What every session needs, whatever spark-submit was given: nights in UTC, Iceberg's
# procedures, secrets kept out of Spark's pages and logs.
BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",
    # Iceberg's SQL procedures (rewrite_data_files, expire_snapshots, ...: fink-spark maintain)
    "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
    "spark.redaction.regex": REDACTION,
    "spark.sql.redaction.options.regex": "(?i)url|" + REDACTION[4:],
    "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
}

# The project's tuning, measured on alerts; under spark-submit, a setting given to it
# (`--conf`, spark-defaults.conf) takes its place (`build_session`).
TUNING_CONF = {
    # A task writes the files of different partitions (topic, night) side by side instead of
    # first sorting all its rows by partition (a sort that spills nested alerts to disk).
    "spark.sql.maxConcurrentOutputFileWriters": "4",
    # An alert has 280 to 470 nested fields, and Spark compiles no whole stage over more than
    # 100: each projection then copies every row, cutouts included. Fused, the micro-batches
    # run 3 to 14% faster (bench/TUNING.md, "Whole-stage code generation").
    "spark.sql.codegen.maxFields": "10000",
    # Parquet writer settings, set on the Hadoop configuration: the streaming file sink
    # passes only the codec from its options to Parquet. Row groups of 64 MB (Parquet's
    # default 128 MB is buffered per open file and task: too much for a 1 GB driver).
    "spark.hadoop.parquet.block.size": str(64 * 1024 * 1024),
    # No dictionary encoding: alert values are mostly unique floats and cutouts, where the
    # dictionary is built, then dropped; writing took 10 to 15% longer with it (bench/TUNING.md).
    "spark.hadoop.parquet.enable.dictionary": "false",
    # Spark's Kafka reader keeps each task's fetched records (up to a fetch, 16 MB a partition)
    # for the next task that starts where it stopped, for 5 minutes by default and without a
    # size bound. A partition split over several tasks (minPartitions) leaves one such entry a
    # micro-batch that nothing resumes: a steady stream of alerts filled a 1 GB heap in 100 s.
    # Kept 5 s, the memory is bounded; a batch that resumes later fetches again (bench/TUNING.md).
    "spark.kafka.consumer.fetchedData.cache.timeout": "5s",
    "spark.kafka.consumer.fetchedData.cache.evictorThreadRunInterval": "1s",
}


def local_conf(shuffle_partitions: int = 2, connectors: bool = True) -> dict[str, str]:
    """Settings for a session started from Python (tests, tools) rather than spark-submit:
    the connector jars (unless only Parquet is read), a quiet log, no UI."""
    log_config = CONF_DIR / "log4j2.properties"
    if not connectors:
        jars = {}
    elif has_connector_jars():
        jars = {"spark.jars": ",".join(str(jar) for jar in connector_jars())}
    else:
        jars = CONNECTOR_PACKAGES
    return {
        **jars,
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.driver.extraJavaOptions": driver_java_options(log_config),
    }


def build_session(
    app_name: str, master: str | None = None, conf: Mapping[str, str] | None = None
) -> SparkSession:
    """Create (or join, under spark-submit) the application's SparkSession."""
    if master and not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise ConfigError("Spark needs Java 17 or 21, and none was found: install a JDK, then put java on the PATH "
                          "or set JAVA_HOME.")
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    given = launcher_settings()
    tuning = {key: value for key, value in TUNING_CONF.items() if key not in given}
    for key, value in {**tuning, **BASE_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def launcher_settings() -> set[str]:
    """The settings spark-submit started the JVM with (its `--conf`, spark-defaults.conf),
    so that the project's tuning yields to them (`--conf spark.sql.codegen.maxFields=100`); none
    outside spark-submit, where the session starts the JVM with this one's settings."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return set()
    SparkContext._ensure_initialized()  # type: ignore[attr-defined]  # joins spark-submit's JVM
    return {key for key, _ in SparkConf().getAll()}


def local_session(app_name: str = "fink-spark", master: str = "local[*]", driver_memory: str = "1g",
                  conf: Mapping[str, str] | None = None) -> SparkSession:
    """A local SparkSession with the connectors, for a command or a notebook (not under spark-submit)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python workers with this environment's packages
    settings = {**local_conf(), "spark.driver.memory": driver_memory, "spark.ui.showConsoleProgress": "false"}
    try:
        return build_session(app_name, master, {**settings, **(conf or {})})
    except PySparkRuntimeError as error:
        if "spark.jars.packages" not in settings or error.getErrorClass() != "JAVA_GATEWAY_EXITED":
            raise
        raise ConfigError(
            "Spark did not start: it could not resolve its Kafka and Avro connectors from Maven Central (see the "
            "lines above). Run once with access to Maven Central (they are cached in ~/.ivy2.5.2 after), or set "
            "FINK_SPARK_JARS to a folder whose spark/ holds them (scripts/setup.sh fills .jars/ in a checkout)."
        ) from None
