#!/usr/bin/env bash
# Run a fink-spark job with spark-submit, the connector jars and the project's Python.
#
#   ./spark-submit.sh [--master URL] [other spark-submit options] jobs/stream.py --config conf/x.yaml
#
# The master defaults to local[*]; --master, or FINK_SPARK_MASTER in the environment,
# chooses another (spark://host:7077, yarn, k8s://...). Options before the job file go
# to spark-submit as they are (the driver's Java options are added to the project's);
# options after it go to the job. No network is needed:
# the jars come from .jars/ (made once by scripts/setup.sh). On a cluster the script
# also zips the fink_spark package and ships it with --py-files; see README "Deploying".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
VENV=${FINK_SPARK_VENV:-$ROOT/.venv}
JARS_DIR=${FINK_SPARK_JARS:-$ROOT/.jars}/spark

if [ ! -x "$VENV/bin/spark-submit" ] || ! compgen -G "$JARS_DIR/*.jar" >/dev/null; then
    echo "fink-spark: the environment is not set up; run scripts/setup.sh first." >&2
    exit 2
fi

MASTER=${FINK_SPARK_MASTER:-local[*]}
SUBMIT_ARGS=()
USER_JAVA_OPTIONS=""  # added to the project's (log configuration, class-data archive), not in their place
while [ $# -gt 0 ]; do
    case "$1" in
        --master) MASTER=$2; shift 2 ;;
        --master=*) MASTER=${1#--master=}; shift ;;
        --driver-java-options) USER_JAVA_OPTIONS+=" $2"; shift 2 ;;
        --driver-java-options=*) USER_JAVA_OPTIONS+=" ${1#--driver-java-options=}"; shift ;;
        --conf) if [[ $2 == spark.driver.extraJavaOptions=* ]]; then
                    USER_JAVA_OPTIONS+=" ${2#spark.driver.extraJavaOptions=}"
                else
                    SUBMIT_ARGS+=("$1" "$2")
                fi
                shift 2 ;;
        *.py) break ;;
        *) SUBMIT_ARGS+=("$1"); shift ;;
    esac
done
if [ $# -eq 0 ]; then
    echo "usage: $0 [--master URL] [spark-submit options] jobs/<job>.py [job options]" >&2
    exit 2
fi

case "$MASTER" in
    local*) export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1} ;;
    *)  # a cluster: ship the fink_spark package to the executors
        mkdir -p "$ROOT/.work"
        rm -f "$ROOT/.work/fink_spark.zip"
        (cd "$ROOT" && "$VENV/bin/python" -m zipfile -c .work/fink_spark.zip fink_spark/)
        SUBMIT_ARGS+=(--py-files "$ROOT/.work/fink_spark.zip") ;;
esac
JARS=$(ls "$JARS_DIR"/*.jar | paste -sd, -)
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$VENV/bin/python}
export PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$VENV/bin/python}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
JAVA_OPTIONS=$(FINK_SPARK_JARS=${JARS_DIR%/spark} "$VENV/bin/python" -c \
    "from pathlib import Path; from fink_spark.paths import driver_java_options; print(driver_java_options(Path('$ROOT/conf/log4j2.properties')))")
JAVA_OPTIONS+=$USER_JAVA_OPTIONS
exec "$VENV/bin/spark-submit" \
    --master "$MASTER" \
    --jars "$JARS" \
    --conf "spark.driver.extraJavaOptions=$JAVA_OPTIONS" \
    --conf spark.ui.showConsoleProgress=false \
    ${SUBMIT_ARGS[@]+"${SUBMIT_ARGS[@]}"} \
    "$@"
