"""Where the project's installed pieces live (connector jars, broker jars, bundled data)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Installed by pip (not in a checkout), the bundled files are under <prefix>/share/fink-spark.
_DATA_ROOT = PROJECT_ROOT if (PROJECT_ROOT / "schemas").is_dir() else Path(sys.prefix) / "share" / "fink-spark"
SCHEMAS_DIR = _DATA_ROOT / "schemas"
CONF_DIR = _DATA_ROOT / "conf"
SAMPLE_DIR = _DATA_ROOT / "data" / "sample"


def jars_dir() -> Path:
    """The folder that `scripts/setup.sh` fills with jars (override with FINK_SPARK_JARS)."""
    return Path(os.environ.get("FINK_SPARK_JARS", PROJECT_ROOT / ".jars"))


def _jars(folder: str, what: str) -> list[Path]:
    jars = sorted((jars_dir() / folder).glob("*.jar"))
    if not jars:
        raise FileNotFoundError(f"No {what} jars in {jars_dir() / folder}: run scripts/setup.sh first.")
    return jars


def connector_jars() -> list[Path]:
    """Spark's Kafka and Avro connectors and the jars they need beyond pyspark's own."""
    return _jars("spark", "Spark connector")


def has_connector_jars() -> bool:
    return any((jars_dir() / "spark").glob("*.jar"))


def class_data_archive() -> Path:
    """The driver JVM's class-data sharing archive (`scripts/setup.sh` records it from a real
    job): Spark's classes come from it already parsed and verified, and a job starts about
    5 s sooner (bench/TUNING.md)."""
    return jars_dir() / "cds" / "driver.jsa"


def driver_java_options(log_config: Path) -> str:
    """The driver JVM's options: the log configuration, and the class-data archive when
    there is one (an archive made with another Java or pyspark is ignored, silently)."""
    options = [f"-Dlog4j2.configurationFile=file:{log_config}"]
    if class_data_archive().is_file():
        options += [f"-XX:SharedArchiveFile={class_data_archive()}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
    return " ".join(options)


def kafka_jars() -> list[Path]:
    """The Apache Kafka broker and tools classpath."""
    return _jars("kafka", "Kafka broker")
