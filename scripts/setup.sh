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

# The driver JVM's class-data archive: the classes a real job loads (reprocessing the bundled
# ZTF alerts), stored parsed and verified, so that every job starts about 5 s sooner. Made
# again when Java or pyspark change; without it, jobs only start slower.
CDS_DIR=${FINK_SPARK_JARS:-$ROOT/.jars}/cds
stamp="$(java -version 2>&1 | head -1), pyspark $("$VENV/bin/python" -c 'import pyspark; print(pyspark.__version__)')"
if [ "$(cat "$CDS_DIR/stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "[setup] recording the classes Spark loads, for faster job starts (about a minute, once)"
    rm -rf "$CDS_DIR"; mkdir -p "$CDS_DIR"
    work=$(mktemp -d)
    printf 'survey: ztf\noutput:\n  format: parquet\n  table:\n    path: %s/alerts\n    checkpoint: %s/checkpoint\n' "$work" "$work" >"$work/job.yaml"
    if ./spark-submit.sh --master 'local[2]' \
        --conf "spark.driver.extraJavaOptions=-XX:ArchiveClassesAtExit=$CDS_DIR/driver.jsa.tmp -Xlog:cds=off -Xlog:cds+dynamic=off" \
        jobs/reprocess.py --config "$work/job.yaml" --input data/sample/ztf-2026 >"$work/log" 2>&1 \
        && [ -s "$CDS_DIR/driver.jsa.tmp" ]; then
        mv "$CDS_DIR/driver.jsa.tmp" "$CDS_DIR/driver.jsa"
        echo "$stamp" >"$CDS_DIR/stamp"
    else
        echo "[setup] could not record them (jobs will start a few seconds slower): $(tail -1 "$work/log")"
    fi
    rm -rf "$work"
fi
echo "[setup] ready: $(ls .jars/spark/*.jar | wc -l) connector jars, $(ls .jars/kafka/*.jar | wc -l) Kafka jars"
