"""Where the project's installed pieces live (connector jars, broker jars, bundled data)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = PROJECT_ROOT / "schemas"
SAMPLE_DIR = PROJECT_ROOT / "data" / "sample"


def jars_dir() -> Path:
    """The folder that `scripts/setup.sh` fills with jars (override with FINK_SPARK_JARS)."""
    return Path(os.environ.get("FINK_SPARK_JARS", PROJECT_ROOT / ".jars"))


def connector_jars() -> list[Path]:
    """Spark's Kafka and Avro connectors and the jars they need beyond pyspark's own."""
    jars = sorted((jars_dir() / "spark").glob("*.jar"))
    if not jars:
        raise FileNotFoundError(
            f"No Spark connector jars in {jars_dir() / 'spark'}: run scripts/setup.sh first."
        )
    return jars


def kafka_jars() -> list[Path]:
    """The Apache Kafka broker and tools classpath."""
    jars = sorted((jars_dir() / "kafka").glob("*.jar"))
    if not jars:
        raise FileNotFoundError(
            f"No Kafka broker jars in {jars_dir() / 'kafka'}: run scripts/setup.sh first."
        )
    return jars
