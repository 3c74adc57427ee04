#!/usr/bin/env bash
# One-time setup, safe to run again: Python environment, Spark connector jars, Kafka jars.
# Needs python3 (3.10+), Java 17 and Maven; reaches PyPI and Maven Central once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${FINK_SPARK_VENV:-$ROOT/.venv}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating the Python environment in $VENV"
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import fink_spark, pyspark, fastavro, confluent_kafka, pytest" 2>/dev/null \
   || [ pyproject.toml -nt "$VENV/.fink-spark-installed" ]; then
    echo "[setup] installing Python packages (pyspark, fastavro, pyarrow, confluent-kafka, ...)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[dev,plots]"
    touch "$VENV/.fink-spark-installed"
fi

PYSPARK_JARS=$("$VENV/bin/python" -c "import pyspark, os; print(os.path.join(os.path.dirname(pyspark.__file__), 'jars'))")
resolve() {  # resolve() POM DEST: copy the POM's runtime jars into DEST, once
    local pom=$1 dest=$2
    if [ -f "$dest/.complete" ] && [ "$dest/.complete" -nt "$pom" ]; then return; fi
    echo "[setup] resolving $(basename "$pom" .pom.xml) jars from Maven Central"
    rm -rf "$dest"; mkdir -p "$dest"
    mvn --batch-mode --quiet -f "$pom" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$dest" >/dev/null
    touch "$dest/.complete"
}
resolve deps/spark-connectors.pom.xml "$ROOT/.jars/spark"
# pyspark already ships Spark, Hadoop and Scala: keep only what it lacks, so that one
# version of each class is on the classpath.
for jar in .jars/spark/*.jar; do
    artifact=$(basename "$jar" | sed -E 's/-[0-9][^-]*(-[A-Za-z0-9.]+)?\.jar$//')
    if compgen -G "$PYSPARK_JARS/$artifact-[0-9]*.jar" >/dev/null; then rm -f "$jar"; fi
done
resolve deps/kafka-broker.pom.xml "$ROOT/.jars/kafka"
echo "[setup] ready: $(ls .jars/spark/*.jar | wc -l) connector jars, $(ls .jars/kafka/*.jar | wc -l) Kafka jars"
