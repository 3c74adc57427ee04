"""pyspark and the connector jars are pinned together, and the patch-level gap works as said.

Maven Central serves spark-sql-kafka-0-10 at pyspark's version (4.1.3) but spark-avro and
spark-token-provider-kafka-0-10 only at 4.1.1 (deps/spark-connectors.pom.xml). The Avro
reader and deserializer come from pyspark's own spark-sql jar; spark-avro adds only the
`from_avro` expression and the Avro file source. The decoding tests (every field of every
alert against fastavro) and the Kafka fault tests run on this exact set.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyspark
from pyspark.sql import SparkSession

from fink_spark.config.session import CONNECTOR_PACKAGES
from fink_spark.paths import connector_jars

POM = Path(__file__).resolve().parent.parent / "deps" / "spark-connectors.pom.xml"


def _version(name: str) -> str:
    match = re.search(rf"<{re.escape(name)}>([^<]+)</", POM.read_text())
    assert match, f"{name} missing from {POM}"
    return match.group(1)


def test_the_kafka_connector_is_at_pysparks_version_and_the_others_at_the_served_patch() -> None:
    assert pyspark.__version__ == _version("spark.version") == "4.1.3"
    jars = {re.sub(r"-\d[\w.]*\.jar$", "", jar.name): jar.name for jar in connector_jars()}
    assert jars["spark-sql-kafka-0-10_2.13"] == f"spark-sql-kafka-0-10_2.13-{pyspark.__version__}.jar"
    assert jars["spark-avro_2.13"] == f"spark-avro_2.13-{_version('spark.served.version')}.jar"
    assert jars["spark-token-provider-kafka-0-10_2.13"].endswith(f"-{_version('spark.served.version')}.jar")


def test_the_iceberg_runtime_is_built_for_pysparks_minor_line_and_pinned_alike_for_installs() -> None:
    minor = ".".join(pyspark.__version__.split(".")[:2])
    runtime = f"iceberg-spark-runtime-{minor}_2.13"
    jars = {re.sub(r"-\d[\w.]*\.jar$", "", jar.name): jar.name for jar in connector_jars()}
    assert jars[runtime] == f"{runtime}-{_version('iceberg.version')}.jar"
    packages = CONNECTOR_PACKAGES["spark.jars.packages"].split(",")
    assert f"org.apache.iceberg:{runtime}:{_version('iceberg.version')}" in packages
    sqlite = next(name for name in jars.values() if name.startswith("sqlite-jdbc-"))
    assert f"org.xerial:sqlite-jdbc:{sqlite.removeprefix('sqlite-jdbc-').removesuffix('.jar')}" in packages
    postgres = next(name for name in jars.values() if name.startswith("postgresql-"))
    assert f"org.postgresql:postgresql:{postgres.removeprefix('postgresql-').removesuffix('.jar')}" in packages


def test_avro_decoding_classes_come_from_pysparks_own_spark_sql(spark: SparkSession) -> None:
    jvm = spark._jvm  # type: ignore[attr-defined]
    loader = jvm.Thread.currentThread().getContextClassLoader()

    def jar_of(name: str) -> str:
        return jvm.java.lang.Class.forName(name, False, loader).getProtectionDomain().getCodeSource().getLocation().getPath()

    for name in ("org.apache.spark.sql.avro.AvroDeserializer", "org.apache.spark.sql.avro.AvroOptions"):
        assert jar_of(name).endswith(f"spark-sql_2.13-{pyspark.__version__}.jar")
    assert jar_of("org.apache.spark.sql.avro.AvroDataToCatalyst").endswith("spark-avro_2.13-4.1.1.jar")
    assert jar_of("org.apache.spark.sql.kafka010.KafkaSourceProvider").endswith(
        f"spark-sql-kafka-0-10_2.13-{pyspark.__version__}.jar")
