"""The job as users run it: ./spark-submit.sh, a YAML file, the password in the environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import PASSWORD, USER, sample

from fink_spark.paths import PROJECT_ROOT, class_data_archive
from fink_spark.surveys import ZTF
from fink_spark.testing.publisher import publish


def submit(config: Path, *job_options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROJECT_ROOT / "spark-submit.sh"), "--master", "local[1]", "jobs/stream.py", "--config", str(config), *job_options],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "FINK_TEST_PASSWORD": PASSWORD},
    )


@pytest.mark.subprocess
def test_spark_submit_runs_the_job_from_a_yaml_file(spark, broker, new_topic, tmp_path: Path) -> None:  # noqa: ANN001
    topic = new_topic("fink_submit_ztf")
    publish(broker.client_config(USER), topic, [sample("ztf-0p2")], ZTF)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({
        "survey": "ztf",
        "kafka": {"servers": "127.0.0.1:1", "username": USER, "password_env": "FINK_TEST_PASSWORD",
                  "group_id": "fink_user_spark", "topics": [topic]},
        "output": {"format": "parquet", "table": {"path": str(tmp_path / "alerts"), "checkpoint": str(tmp_path / "chk")},
                   "console": {"rows": 2}},
        "trigger": {"processing_time": "5 seconds"},
    }))
    result = submit(config, "--available-now", "--servers", broker.bootstrap)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--- batch 0: 4 alerts, showing 2, 0 quarantined ---" in result.stdout
    # The job's log: a line per micro-batch, then the totals (read from the query's progress)
    log = result.stdout + result.stderr
    assert "fink_spark.run.progress: alerts: batch 0, 4 records in " in log
    assert "fink_spark.run.progress: alerts done: 4 records in " in log
    assert PASSWORD not in result.stdout + result.stderr
    assert spark.read.parquet(str(tmp_path / "alerts")).count() == 4


@pytest.mark.subprocess
def test_spark_submit_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("survey: ztf\nkafka: {servers: x, topics: [t]}\noutput: {format: parquet, table: {path: a}}\n")
    result = submit(config)
    assert result.returncode == 2
    # spark-submit passes the job's stderr on through its stdout.
    output = (result.stdout + result.stderr).splitlines()
    lines = [line for line in output if not line.startswith("WARNING: Using incubator")]
    assert lines == ["fink-spark: Missing required key 'output.table.checkpoint'."]
    assert not (tmp_path / "a").exists()


@pytest.mark.subprocess
def test_a_users_spark_submit_options_are_added_to_the_projects_and_win_over_its_settings(tmp_path: Path) -> None:
    """--driver-java-options and spark.driver.extraJavaOptions would otherwise replace the
    log configuration and the class-data archive that spark-submit.sh passes; a --conf of a
    setting the project also makes (whole-stage code generation's limit) is the user's."""
    script = tmp_path / "show_jvm.py"
    script.write_text(
        "from fink_spark.config.session import build_session\n"
        "spark = build_session('show_jvm')\n"
        "jvm = spark.sparkContext._jvm\n"
        "print('JVM:', ' '.join(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()))\n"
        "print('SQL:', spark.conf.get('spark.sql.codegen.maxFields'), spark.conf.get('spark.sql.maxConcurrentOutputFileWriters'))\n"
    )
    result = subprocess.run(
        [str(PROJECT_ROOT / "spark-submit.sh"), "--master", "local[1]", "--driver-java-options", "-Dfink.one=1 -Dfink.two=2",
         "--conf", "spark.driver.extraJavaOptions=-Dfink.three=3", "--conf", "spark.sql.codegen.maxFields=100", str(script)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SQL: 100 4" in result.stdout.splitlines()  # the user's limit; the project's setting the user left alone
    arguments = next(line for line in result.stdout.splitlines() if line.startswith("JVM: ")).split()
    assert {"-Dfink.one=1", "-Dfink.two=2", "-Dfink.three=3"} <= set(arguments)
    assert f"-Dlog4j2.configurationFile=file:{PROJECT_ROOT / 'conf' / 'log4j2.properties'}" in arguments
    assert f"-XX:SharedArchiveFile={class_data_archive()}" in arguments
